from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from celery import Celery
from hypothesis import HealthCheck, settings

import prioroute

from ._memory import reset_memory_broker

settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(name="registry")
def _registry() -> prioroute.Registry:
    """A fresh registry with the default tiers."""
    return prioroute.Registry()


@pytest.fixture(name="app")
def _app() -> Iterator[Celery]:
    """A Celery app on kombu's in-memory transport: it publishes without any server."""
    app = Celery("proj", broker="memory://", set_as_current=False)
    yield app
    app.close()


@pytest.fixture(autouse=True)
def _empty_memory_broker() -> Iterator[None]:
    reset_memory_broker()
    yield
    reset_memory_broker()
