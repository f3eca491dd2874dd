"""A real worker on a real RabbitMQ serves critical tasks before a backlog of low ones.

The same test runs on a control app without prioroute (a plain queue with route
priorities, as users write by hand), where the critical tasks wait for the whole backlog.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from kombu import Connection

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
BACKLOG = 200
CRITICAL = 5
CONCURRENCY = 2
DEADLINE = 120.0  # seconds; the run takes ~5 s, the bound only stops a hung test


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _wait_for(log: Path, count: int, worker: subprocess.Popen[bytes]) -> list[str]:
    stop = time.monotonic() + DEADLINE
    while time.monotonic() < stop:
        lines = _lines(log)
        if len(lines) >= count:
            return lines
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode} after {len(lines)} tasks")
        time.sleep(0.05)
    pytest.fail(f"only {len(_lines(log))} of {count} tasks started within {DEADLINE:.0f} s")


@pytest.fixture(name="it_app", params=["prioroute", "without"])
def _it_app(
    request: pytest.FixtureRequest, amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    if request.param == "without":
        monkeypatch.setenv("PRIOROUTE_IT_WITHOUT_PRIOROUTE", "1")
    queue = f"prioroute-it-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRIOROUTE_IT_QUEUE", queue)
    monkeypatch.setenv("PRIOROUTE_IT_LOG", str(tmp_path / "starts.log"))
    monkeypatch.setenv("PRIOROUTE_AMQP_URL", amqp_url)
    sys.modules.pop("tests.integration.prio_app", None)
    module = importlib.import_module("tests.integration.prio_app")
    module.WITH_PRIOROUTE = request.param == "prioroute"  # type: ignore[attr-defined]
    yield module
    module.app.close()
    with Connection(amqp_url) as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


@pytest.fixture(name="start_worker")
def _start_worker(tmp_path: Path) -> Iterator[object]:
    workers: list[subprocess.Popen[bytes]] = []

    def start(queue: str) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.prio_app",
            "worker",
            "-Q",
            queue,
            "-c",
            str(CONCURRENCY),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"it-{uuid.uuid4().hex[:6]}@localhost",
        ]
        with (tmp_path / "worker.out").open("wb") as output:
            worker = subprocess.Popen(
                command, cwd=ROOT, env=dict(os.environ), stdout=output, stderr=subprocess.STDOUT
            )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:  # stop only what we started, by PID
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def test_critical_tasks_overtake_the_backlog(
    it_app: ModuleType, start_worker: object, tmp_path: Path
) -> None:
    log = tmp_path / "starts.log"
    for number in range(BACKLOG):
        it_app.low.delay(number)
    worker = start_worker(it_app.QUEUE)  # type: ignore[operator]
    before = len(_wait_for(log, 5, worker))  # the worker is busy with the backlog
    for number in range(CRITICAL):
        it_app.critical.delay(number)
    lines = _wait_for(log, BACKLOG + CRITICAL, worker)

    positions = [i for i, line in enumerate(lines) if line.startswith("critical")]
    low_after_last_critical = sum(1 for line in lines[positions[-1] :] if line.startswith("low"))
    overtaken = low_after_last_critical
    print(
        f"\ncritical start positions {positions} (published after position {before}); "
        f"{overtaken} of {BACKLOG} low tasks started after the last critical one"
    )
    assert len(positions) == CRITICAL
    if not it_app.WITH_PRIOROUTE:
        # The control shows the test can fail: a plain queue serves the backlog first.
        assert positions[0] > BACKLOG - 2 * CONCURRENCY
        return
    # Each critical task waits at most for the low tasks the worker had already reserved
    # (prefetch 1 per process) when it was published: a handful, never the backlog.
    assert positions[-1] - before <= CRITICAL + 2 * CONCURRENCY + 2
    assert overtaken >= BACKLOG - before - 2 * CONCURRENCY - 10
