"""Runs the Python code blocks of README.md and docs/*.md as tests (Sybil)."""

from __future__ import annotations

from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser

pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser()],
    patterns=["README.md", "*.md"],
    excludes=["CHANGELOG.md"],
).pytest()
