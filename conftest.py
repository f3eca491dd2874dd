"""Runs the examples of the docs as tests (Sybil): the Python code blocks of README.md and
docs/*.md, their ``console`` blocks (commands and what they print), and the ``>>>`` examples
in prioroute's docstrings."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from doctest import ELLIPSIS, NORMALIZE_WHITESPACE
from pathlib import Path

import pytest
from sybil import Example, Sybil
from sybil.parsers.myst import CodeBlockParser, PythonCodeBlockParser, SkipParser
from sybil.parsers.rest import DocTestParser

ROOT = Path(__file__).resolve().parent
_EXIT = re.compile(r"\s+#\s*exits?\s+(\d+)\s*$")


def run_console(example: Example) -> str | None:
    """Run each ``$ prioroute ...`` line of a ``console`` block from the repository's root.

    The lines after a command are fragments its output must contain, in order (blank lines
    and ``...`` are skipped); ``# exits N`` after a command is the exit code it must give
    (0 if absent). Only prioroute's own commands run here: nothing that needs a broker.
    """
    blocks: list[tuple[str, list[str]]] = []
    for line in str(example.parsed).splitlines():
        if line.startswith("$ "):
            blocks.append((line[2:], []))
        elif blocks and line.strip() and line.strip() != "...":
            blocks[-1][1].append(line.strip())
    for line, expected in blocks:
        found = _EXIT.search(line)
        want = int(found.group(1)) if found else 0
        command = line[: found.start()] if found else line
        argv = shlex.split(command)
        if argv[:3] == ["python3", "-m", "prioroute"]:
            argv = argv[3:]
        elif argv[:1] == ["prioroute"]:
            argv = argv[1:]
        else:
            return f"console blocks may only run prioroute, not {command!r}"
        result = subprocess.run(
            [sys.executable, "-m", "prioroute", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        output = " ".join((result.stdout + result.stderr).split())
        if result.returncode != want:
            return f"{command!r} exited {result.returncode}, not {want}:\n{result.stdout}{result.stderr}"
        position = 0
        for fragment in expected:
            index = output.find(" ".join(fragment.split()), position)
            if index < 0:
                return f"{command!r} did not print {fragment!r} (in order); it printed:\n{result.stdout}"
            position = index + len(fragment)
    return None


markdown = Sybil(
    parsers=[PythonCodeBlockParser(), CodeBlockParser("console", run_console), SkipParser()],
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
