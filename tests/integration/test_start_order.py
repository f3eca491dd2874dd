"""Real workers on real brokers serve critical tasks before a backlog of low ones.

Each scenario publishes a backlog of low tasks, starts the workers (the ones
``prioroute.plan_workers`` plans, for prioroute's apps), publishes critical tasks once the
workers are busy, and reads the order in which the tasks *started*. Controls configured by
hand, as users do, show that the same test fails where priorities do not work.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import attrs
import pytest
from kombu import Connection

import prioroute

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.prio_app"
BACKLOG = 200
CRITICAL = 5
CONCURRENCY = 2
DEADLINE = 120.0  # seconds; a run takes ~5 s, the bound only stops a hung test


@attrs.frozen
class Scenario:
    id: str
    broker: str  # "amqp" or "redis"
    mode: str = "prioroute"
    profile: str = ""
    topology: str = ""
    critical_first: bool = True


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


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _wait_for(log: Path, count: int, workers: list[subprocess.Popen[bytes]]) -> list[str]:
    stop = time.monotonic() + DEADLINE
    while time.monotonic() < stop:
        lines = _lines(log)
        if len(lines) >= count:
            return lines
        for worker in workers:
            if worker.poll() is not None:
                pytest.fail(f"a worker exited with {worker.returncode} after {len(lines)} tasks")
        time.sleep(0.05)
    pytest.fail(f"only {len(_lines(log))} of {count} tasks started within {DEADLINE:.0f} s")


def _cleanup(module: ModuleType, url: str) -> None:
    """Delete what the test declared on the broker (its names are unique to the test)."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"*{module.QUEUE}*"):
            client.delete(key)
        client.close()
        return
    names = list(module.app.amqp.queues)
    with Connection(url) as connection:
        channel = connection.default_channel
        for name in (*names, *(f"{n}.dead" for n in names)):
            channel.queue_delete(name)
            channel.exchange_delete(name)


@pytest.fixture(name="scenario", params=SCENARIOS, ids=lambda s: s.id)
def _scenario(request: pytest.FixtureRequest) -> Scenario:
    scenario: Scenario = request.param
    return scenario


@pytest.fixture(name="it_app")
def _it_app(
    scenario: Scenario,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModuleType]:
    url = request.getfixturevalue("redis_url" if scenario.broker == "redis" else "amqp_url")
    monkeypatch.setenv("PRIOROUTE_IT_BROKER", url)
    monkeypatch.setenv("PRIOROUTE_IT_MODE", scenario.mode)
    monkeypatch.setenv("PRIOROUTE_IT_PROFILE", scenario.profile)
    monkeypatch.setenv("PRIOROUTE_IT_TOPOLOGY", scenario.topology)
    monkeypatch.setenv("PRIOROUTE_IT_QUEUE", f"prioroute-it-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PRIOROUTE_IT_LOG", str(tmp_path / "starts.log"))
    sys.modules.pop(APP, None)
    module = importlib.import_module(APP)
    yield module
    module.app.close()
    _cleanup(module, url)


def _commands(module: ModuleType) -> list[list[str]]:
    """The worker command lines: prioroute's plan, or one plain worker for the controls."""
    if module.MODE != "prioroute":
        argv = ["celery", "-A", APP, "worker", "-Q", module.QUEUE, "-c", str(CONCURRENCY)]
        return [argv]
    plan = prioroute.plan_workers(module.app, CONCURRENCY if _shared(module) else 3, app_path=APP)
    return [worker.argv(APP) for worker in plan.workers]


def _shared(module: ModuleType) -> bool:
    return prioroute.plan_workers(module.app, 3, app_path=APP).topology == "shared"


@pytest.fixture(name="start_workers")
def _start_workers(
    tmp_path: Path,
) -> Iterator[Callable[[ModuleType], list[subprocess.Popen[bytes]]]]:
    workers: list[subprocess.Popen[bytes]] = []

    def start(module: ModuleType) -> list[subprocess.Popen[bytes]]:
        for number, argv in enumerate(_commands(module)):
            if "-n" in argv:  # a node name unique to this run
                del argv[argv.index("-n") : argv.index("-n") + 2]
            command = [
                sys.executable,
                "-m",
                *argv,
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"it{number}-{uuid.uuid4().hex[:6]}@localhost",
            ]
            with (tmp_path / f"worker{number}.out").open("wb") as output:
                workers.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=dict(os.environ),
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        return workers

    yield start
    for worker in workers:  # stop only what we started, by PID
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


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
    before = len(_wait_for(log, 5, workers))  # the workers are busy with the backlog
    for number in range(CRITICAL):
        it_app.critical.delay(number)
    lines = _wait_for(log, BACKLOG + CRITICAL, workers)

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
    _wait_for(log, 1, workers)  # the workers are up and bound to the delay exchanges
    sent = time.monotonic()
    it_app.critical.apply_async((1,), countdown=2)
    assert _wait_for(log, 2, workers)[1] == "critical 1"
    assert time.monotonic() - sent >= 1.5
    assert "Direct exchanges are not supported" not in caplog.text
