"""Real workers on real brokers serve critical tasks before a backlog of low ones.

Each scenario publishes a backlog of low tasks, starts the workers (the ones
``prioroute.plan_workers`` plans, for prioroute's apps), publishes critical tasks once the
workers are busy, and reads the order in which the tasks *started*. Controls configured by
hand, as users do, show that the same test fails where priorities do not work.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import CONCURRENCY, Scenario, scenarios, wait_for

pytestmark = pytest.mark.broker

BACKLOG = 200
CRITICAL = 5


SCENARIOS = [
    Scenario("rabbitmq-shared", "amqp", topology="shared"),
    Scenario("rabbitmq-plain-queue-control", "amqp", mode="plain", critical_first=False),
    Scenario("rabbitmq-lanes", "amqp", topology="lanes"),
    Scenario("rabbitmq-quorum-lanes", "amqp", profile="rabbitmq-quorum"),
    Scenario("redis-shared", "redis", topology="shared"),
    Scenario(
        "redis-rabbitmq-numbering-trap", "redis", mode="rabbitmq-numbering", critical_first=False
    ),
]


_scenario = scenarios(*SCENARIOS)


def test_critical_tasks_start_before_the_backlog_drains(
    scenario: Scenario,
    it_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "starts.log"
    for number in range(BACKLOG):
        it_app.low.delay(number)
    workers = start_workers(it_app)
    before = len(wait_for(log, 5, workers))  # the workers are busy with the backlog
    for number in range(CRITICAL):
        it_app.critical.delay(number)
    lines = wait_for(log, BACKLOG + CRITICAL, workers)

    positions = [i for i, line in enumerate(lines) if line.startswith("critical")]
    overtaken = sum(1 for line in lines[positions[-1] :] if line.startswith("low"))
    print(
        f"\n{scenario.id}: critical start positions {positions} (published after position "
        f"{before}); {overtaken} of {BACKLOG} low tasks started after the last critical one"
    )
    assert len(positions) == CRITICAL
    if not scenario.critical_first:
        # The control shows the test can fail: the backlog is served first.
        assert positions[0] > BACKLOG - 2 * CONCURRENCY
        return
    # Each critical task waits at most for the low tasks the workers had already reserved
    # (prefetch 1 per process) or run meanwhile on their own lane: a handful, never the
    # backlog.
    assert positions[-1] - before <= CRITICAL + 2 * CONCURRENCY + 8
    assert overtaken >= BACKLOG - before - 2 * CONCURRENCY - 16


@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if s.profile == "rabbitmq-quorum"], ids=lambda s: s.id
)
def test_quorum_lanes_deliver_countdowns_without_blocking_a_worker(
    scenario: Scenario,
    it_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Quorum lanes sit on topic exchanges, so Celery's native delayed delivery takes a
    countdown through RabbitMQ instead of parking it in a worker (which it warns about on
    direct exchanges)."""
    log = tmp_path / "starts.log"
    workers = start_workers(it_app)
    it_app.critical.delay(0)
    wait_for(log, 1, workers)  # the workers are up and bound to the delay exchanges
    sent = time.monotonic()
    it_app.critical.apply_async((1,), countdown=2)
    assert wait_for(log, 2, workers)[1] == "critical 1"
    assert time.monotonic() - sent >= 1.5
    assert "Direct exchanges are not supported" not in caplog.text
