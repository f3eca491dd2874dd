"""Runs the examples of the docs as tests (Sybil): the Python code blocks of README.md and
docs/*.md, and the ``>>>`` examples in prioroute's docstrings."""

from __future__ import annotations

from doctest import ELLIPSIS, NORMALIZE_WHITESPACE

from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser
from sybil.parsers.rest import DocTestParser

markdown = Sybil(
    parsers=[PythonCodeBlockParser()],
    patterns=["README.md", "*.md"],
    excludes=["CHANGELOG.md"],
)
docstrings = Sybil(
    parsers=[DocTestParser(optionflags=ELLIPSIS | NORMALIZE_WHITESPACE)],
    patterns=["src/prioroute/*.py"],
)
pytest_collect_file = (markdown + docstrings).pytest()
