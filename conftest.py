"""Runs the examples of the docs as tests (Sybil): the Python code blocks of README.md and
docs/*.md, and the ``>>>`` examples in prioroute's docstrings."""

from __future__ import annotations

from collections.abc import Iterator
from doctest import ELLIPSIS, NORMALIZE_WHITESPACE

import pytest
from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser
from sybil.parsers.rest import DocTestParser

markdown = Sybil(
    parsers=[PythonCodeBlockParser()],
    patterns=["README.md", "*.md"],
    excludes=["CHANGELOG.md"],
    fixtures=["_isolate_celery_tasks"],
)
docstrings = Sybil(
    parsers=[DocTestParser(optionflags=ELLIPSIS | NORMALIZE_WHITESPACE)],
    patterns=["src/prioroute/*.py"],
    fixtures=["_isolate_celery_tasks"],
)
pytest_collect_file = (markdown + docstrings).pytest()


@pytest.fixture(autouse=True)  # Sybil's examples ask for it by name, above
def _isolate_celery_tasks() -> Iterator[None]:
    """``@app.task`` is shared by default: Celery adds it to every app finalized later.

    Tests define tasks with the same names in many apps; forget them after each test.
    """
    from celery import _state

    before = set(_state._on_app_finalizers)
    yield
    _state._on_app_finalizers.intersection_update(before)
