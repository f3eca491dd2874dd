"""`prioroute verify` and `prioroute monitor` against real RabbitMQ and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from kombu import Connection, Queue

from prioroute._cli import main

from .conftest import APP, ROOT, Scenario, scenarios, wait_for

pytestmark = pytest.mark.broker


_scenario = scenarios(
    Scenario("rabbitmq-shared", "amqp", topology="shared"),
    Scenario("redis-shared", "redis"),
)


def _verify(module: ModuleType) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["verify", f"{APP}:app", "--format", "json"])
    assert result.exit_code in {0, 1, 2}, result.output
    return result.exit_code, json.loads(result.output)


def _states(data: dict[str, Any]) -> dict[str, str]:
    return {q["name"]: q["status"] for q in data["queues"]}


class TestVerify:
    def test_missing_then_idle_then_consumed(
        self,
        scenario: Scenario,
        it_app: ModuleType,
        start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
        tmp_path: Path,
    ) -> None:
        queue = it_app.QUEUE
        code, data = _verify(it_app)
        assert (code, _states(data)[queue]) == (1, "missing")

        it_app.low.delay(0)  # publishing declares the queue: it exists, nobody consumes it
        code, data = _verify(it_app)
        (state,) = [q for q in data["queues"] if q["name"] == queue]
        assert state["exists"]
        assert state["depth"] == 1
        if scenario.broker == "amqp":  # Redis cannot count consumers without workers
            assert (code, state["status"]) == (1, "idle")

        workers = start_workers(it_app)
        wait_for(tmp_path / "starts.log", 1, workers)
        code, data = _verify(it_app)
        (state,) = [q for q in data["queues"] if q["name"] == queue]
        assert state["consumers"] >= 1
        assert (code, state["status"], state["depth"]) == (0, "ok", 0)


@pytest.mark.parametrize(
    "scenario", [Scenario("rabbitmq-shared", "amqp", topology="shared")], ids=lambda s: s.id
)
def test_verify_reports_a_queue_with_other_arguments(
    scenario: Scenario, it_app: ModuleType, amqp_url: str
) -> None:
    """The seed's situation: the queue exists without x-max-priority."""
    with Connection(amqp_url) as connection:
        Queue(it_app.QUEUE, durable=True).bind(connection.default_channel).declare()
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "prioroute", "verify"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "mismatch: queue" in output
    assert "PRECONDITION_FAILED - inequivalent arg 'x-max-priority'" in output
    assert "configure(app, queue=...)" in output
    # verify changed nothing: the queue still has no x-max-priority
    with Connection(amqp_url) as connection:
        Queue(it_app.QUEUE, durable=True).bind(connection.default_channel).declare()


def test_monitor_measures_the_wait_behind_a_backlog(
    scenario: Scenario,
    it_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    """Low tasks queued behind a backlog wait longer than a critical task that overtakes
    them; the monitor sees it from the workers' wait events."""
    for number in range(60):
        it_app.low.delay(number)
    it_app.critical.delay(0)
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prioroute",
            "monitor",
            f"{APP}:app",
            "--once",
            "--interval",
            "12",
            "--format",
            "json",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # the monitor binds its event queue before any task starts
        workers = start_workers(it_app)
        wait_for(tmp_path / "starts.log", 61, workers)
        output, errors = monitor.communicate(timeout=60)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(timeout=10)
    assert monitor.returncode == 0, errors
    snapshot = json.loads(output.splitlines()[-1])
    tiers = {t["tier"]: t for t in snapshot["tiers"]}
    print(f"\n{scenario.id}: {tiers}")
    assert tiers["critical"]["started"] == 1
    assert tiers["low"]["started"] == 60
    # Every task waited for the workers to start; the low ones also for each other.
    assert tiers["low"]["p95"] > tiers["critical"]["p50"] + 0.3
    (queue,) = [q for q in snapshot["queues"] if q["name"] == it_app.QUEUE]
    assert queue["deliver_rate"] > 0
    assert set(queue["tiers"]) == {"critical", "normal", "low"}
