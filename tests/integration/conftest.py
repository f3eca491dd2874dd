"""Real brokers for the integration tests: under CI their absence fails a test, never skips it."""

from __future__ import annotations

import os

import pytest
from kombu import Connection

AMQP_URL = os.environ.get("PRIOROUTE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("PRIOROUTE_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unreachable(url: str) -> str | None:
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # any failure to connect means "not available"
        return f"{type(exc).__name__}: {exc}"
    return None


def _require(name: str, url: str, variable: str) -> str:
    problem = _unreachable(url)
    if problem is not None:
        message = (
            f"{name} is not reachable at {url} ({problem}); start it with "
            f"`scripts/brokers up` or set {variable}"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(name="amqp_url", scope="session")
def _amqp_url() -> str:
    """A reachable RabbitMQ."""
    return _require("RabbitMQ", AMQP_URL, "PRIOROUTE_AMQP_URL")


@pytest.fixture(name="redis_url", scope="session")
def _redis_url() -> str:
    """A reachable Redis (database 15 unless PRIOROUTE_REDIS_URL says otherwise)."""
    return _require("Redis", REDIS_URL, "PRIOROUTE_REDIS_URL")
