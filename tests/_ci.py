"""What a test does when something it needs is missing: fail under CI, skip elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Fail the test when ``CI`` is set (a missing broker must not pass as a skip); skip
    it elsewhere, saying what to run."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
