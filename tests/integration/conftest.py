from __future__ import annotations

import os

import pytest
from kombu import Connection

AMQP_URL = os.environ.get("PRIOROUTE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _unreachable(url: str) -> str | None:
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # any failure to connect means "not available"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(name="amqp_url", scope="session")
def _amqp_url() -> str:
    """A reachable RabbitMQ; under CI its absence fails the test instead of skipping it."""
    problem = _unreachable(AMQP_URL)
    if problem is not None:
        message = (
            f"RabbitMQ is not reachable at {AMQP_URL} ({problem}); start it with "
            "`scripts/brokers up` or set PRIOROUTE_AMQP_URL"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL
