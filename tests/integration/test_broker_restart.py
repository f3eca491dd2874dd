"""Nothing confirmed is lost when the broker restarts mid-run.

Each scenario starts its own broker (the suite's shared ones serve other tests meanwhile):
a RabbitMQ node, or a Redis server that fsyncs every write to its AOF. It publishes a few
hundred tasks (on RabbitMQ ``apply_async`` returns once the broker confirmed each), starts a
worker, stops the broker by its PID once some tasks have completed, and while it is down:

* publishes without retries, which must raise a clear error, never return as if sent;
* publishes from a thread with Celery's retry policy, which must block until the broker is
  back or raise, never drop a message silently.

Then it restarts the broker on the same data dir and waits, bounded, until every task whose
publish returned has completed at least once, on the same worker, which must reconnect by
itself.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from ._servers import RabbitNode, RedisServer, require
from .conftest import APP, Scenario, import_app, lines_of, scenarios

pytestmark = pytest.mark.broker

TASKS = 300
OUTAGE_AFTER = 40  # completed tasks before the broker goes down
RETRIED = 30  # tasks the retrying publisher sends during the outage
OUTAGE = 3.0  # seconds the broker stays down after the probes
PROBES = (100_000, 100_001)  # published without retry while the broker is down
DEADLINE = 180.0
RETRY_POLICY = {"max_retries": 60, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
#: What the worker logs when it handles the outage, counted for the figures.
WORKER_EVENTS = {
    "cancelled": "cannot be acknowledged after a connection loss",
    "hard time limits": "Hard time limit",
    "unrecoverable errors": "Unrecoverable error",
}

Server = RabbitNode | RedisServer


_scenario = scenarios(
    Scenario("rabbitmq-restart", "amqp", topology="shared", tiers="bounded"),
    # Redis redelivers what a worker had reserved after visibility_timeout: bounded tiers
    # make it seconds.
    Scenario("redis-restart", "redis", tiers="bounded"),
)


@pytest.fixture(name="server")
def _server(scenario: Scenario, tmp_path: Path) -> Iterator[Server]:
    """The scenario's own broker; stopped by PID and deleted afterwards, even on failure
    (its logs are kept in ``tmp_path/server-log``)."""
    if scenario.broker == "amqp":
        require("rabbitmq-server", "rabbitmqctl")
        server: Server = RabbitNode()
    else:
        require("redis-server")
        server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.remove(keep_logs=tmp_path / "server-log")


@pytest.fixture(name="restart_app")
def _restart_app(
    scenario: Scenario,
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModuleType]:
    """``prio_app`` on the scenario's own broker (``it_app`` takes the shared brokers)."""
    queue = f"prioroute-restart-{uuid.uuid4().hex[:8]}"
    module = import_app(monkeypatch, server.url, scenario, queue, tmp_path / "starts.log")
    yield module
    module.app.close()
    sys.modules.pop(APP, None)


class RetryingPublisher(threading.Thread):
    """Publishes with Celery's retry policy while the broker is down; records every outcome."""

    def __init__(self, tasks: list[Any], numbers: range, stop: float):
        super().__init__(daemon=True)
        self.tasks = tasks
        self.numbers = numbers
        self.stop = stop  # time.monotonic() after which it publishes no more
        self.sent: list[int] = []
        self.errors: list[str] = []
        self.seconds = 0.0

    def run(self) -> None:
        start = time.monotonic()
        for number in self.numbers:
            began = time.monotonic()
            if began > self.stop:
                self.errors.append(f"task {number}: not published, the test ran out of time")
                continue
            try:
                self.tasks[number % 3].apply_async((number,), retry=True, retry_policy=RETRY_POLICY)
            except Exception as exc:  # recorded: an error the caller sees is not a silent drop
                took = time.monotonic() - began
                self.errors.append(f"task {number} after {took:.1f} s: {type(exc).__name__}: {exc}")
            else:
                self.sent.append(number)
        self.seconds = time.monotonic() - start


def _completed(log: Path) -> Counter[int]:
    return Counter(int(line.split()[1]) for line in lines_of(log) if line.startswith("done-"))


def _probe(task: Any, number: int) -> str:
    """Publish without retry while the broker is down: it must raise."""
    try:
        task.apply_async((number,), retry=False)
    except OperationalError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "returned"


def test_confirmed_tasks_survive_a_broker_restart(
    scenario: Scenario,
    server: Server,
    restart_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "starts.log"
    stop = time.monotonic() + DEADLINE
    tasks = [restart_app.work_critical, restart_app.work_normal, restart_app.work_low]
    for number in range(TASKS):  # each returns once the broker has it (confirms on RabbitMQ)
        tasks[number % 3].delay(number)
    (worker,) = start_workers(restart_app)
    while len(_completed(log)) < OUTAGE_AFTER and worker.poll() is None:
        assert time.monotonic() < stop, f"{len(_completed(log))} tasks done in {DEADLINE:.0f} s"
        time.sleep(0.02)
    assert worker.poll() is None, f"the worker exited with {worker.returncode} before the outage"

    down = time.monotonic()
    server.stop()
    before = len(_completed(log))
    # The first probe may still hold the connection the broker closed, the second connects.
    probes = [_probe(restart_app.work_critical, number) for number in PROBES]
    publisher = RetryingPublisher(tasks, range(TASKS, TASKS + RETRIED), stop)
    publisher.start()
    time.sleep(OUTAGE)
    server.start()
    up = time.monotonic()
    publisher.join(timeout=max(stop - time.monotonic(), 1))
    assert not publisher.is_alive(), "the retrying publisher still blocks after the restart"

    expected = set(range(TASKS)) | set(publisher.sent)
    while not expected <= set(_completed(log)):
        if worker.poll() is not None or time.monotonic() > stop:
            break
        time.sleep(0.1)
    counts = _completed(log)
    lost = sorted(expected - set(counts))
    output = (tmp_path / "worker0.out").read_text(errors="replace")
    events = ", ".join(f"{output.count(text)} {name}" for name, text in WORKER_EVENTS.items())
    print(
        f"\n{scenario.id}: published {len(expected)}, completed {len(set(counts) & expected)}, "
        f"lost {len(lost)}, duplicated {sum(c - 1 for c in counts.values())}, "
        f"outage: {probes[0]}"
        f"\n  {before} of {TASKS} completed when the broker went down; down for "
        f"{up - down:.1f} s; without retry: {probes}"
        f"\n  with retry: {len(publisher.sent)} of {RETRIED} sent in {publisher.seconds:.1f} s, "
        f"{len(publisher.errors)} raised {publisher.errors[:2]}"
        f"\n  worker: {events}; "
        + (
            f"exited with {worker.returncode}"
            if worker.poll() is not None
            else f"done {time.monotonic() - up:.1f} s after the restart"
        )
    )
    assert before < TASKS, "every task completed before the outage: nothing was at stake"
    assert "returned" not in probes, "a publish without retry returned while the broker was down"
    assert not set(counts) & set(PROBES), "a publish that raised was delivered all the same"
    assert len(publisher.sent) + len(publisher.errors) == RETRIED
    if worker.poll() is not None:
        tail = "\n".join(output.splitlines()[-30:])
        pytest.fail(f"the worker exited with {worker.returncode}:\n{tail}")
    assert lost == [], f"{len(lost)} confirmed tasks lost: {lost[:10]}"
