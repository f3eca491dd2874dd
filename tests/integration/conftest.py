"""Real brokers and real workers for the integration tests.

Under CI a missing broker fails a test, never skips it. A test module picks what it runs by
defining a ``scenario`` fixture (a :class:`Scenario`); ``it_app`` imports
``tests/integration/prio_app.py`` configured for it, and ``start_workers`` runs the
``celery worker`` processes prioroute plans for it, stopping them (by PID) afterwards.
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
from typing import Any

import attrs
import pytest
from kombu import Connection

import prioroute
from tests._ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.prio_app"
CONCURRENCY = 2
DEADLINE = 120.0  # seconds; runs take a few, the bound only stops a hung test

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
        unavailable(message)
    return url


@pytest.fixture(name="amqp_url", scope="session")
def _amqp_url() -> str:
    """A reachable RabbitMQ."""
    return _require("RabbitMQ", AMQP_URL, "PRIOROUTE_AMQP_URL")


@pytest.fixture(name="redis_url", scope="session")
def _redis_url() -> str:
    """A reachable Redis (database 15 unless PRIOROUTE_REDIS_URL says otherwise)."""
    return _require("Redis", REDIS_URL, "PRIOROUTE_REDIS_URL")


@attrs.frozen
class Scenario:
    id: str
    broker: str  # "amqp" or "redis"
    mode: str = "prioroute"
    profile: str = ""
    topology: str = ""
    critical_first: bool = True
    tiers: str = ""  # "bounded": see prio_app.py


def scenarios(*params: Scenario) -> Any:
    """The ``scenario`` fixture of a test module: each test runs once per scenario.

    Use as ``_scenario = scenarios(Scenario(...), ...)`` at module level.
    """

    @pytest.fixture(name="scenario", params=params, ids=lambda s: s.id)
    def _scenario(request: pytest.FixtureRequest) -> Scenario:
        scenario: Scenario = request.param
        return scenario

    return _scenario


def lines_of(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(log: Path, count: int, workers: list[subprocess.Popen[bytes]]) -> list[str]:
    stop = time.monotonic() + DEADLINE
    while time.monotonic() < stop:
        lines = lines_of(log)
        if len(lines) >= count:
            return lines
        for worker in workers:
            if worker.poll() is not None:
                pytest.fail(f"a worker exited with {worker.returncode} after {len(lines)} tasks")
        time.sleep(0.05)
    pytest.fail(f"only {len(lines_of(log))} of {count} tasks started within {DEADLINE:.0f} s")


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


def import_app(
    monkeypatch: pytest.MonkeyPatch, url: str, scenario: Scenario, queue: str, log: Path
) -> ModuleType:
    """``prio_app`` imported afresh for *scenario* on the broker at *url*, around *queue*,
    its tasks writing to *log*; the environment stays set for the workers and the CLI."""
    for key, value in {
        "BROKER": url,
        "MODE": scenario.mode,
        "PROFILE": scenario.profile,
        "TOPOLOGY": scenario.topology,
        "TIERS": scenario.tiers,
        "QUEUE": queue,
        "LOG": str(log),
    }.items():
        monkeypatch.setenv(f"PRIOROUTE_IT_{key}", value)
    sys.modules.pop(APP, None)
    return importlib.import_module(APP)


@pytest.fixture(name="it_app")
def _it_app(
    scenario: Scenario,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModuleType]:
    url = request.getfixturevalue("redis_url" if scenario.broker == "redis" else "amqp_url")
    module = import_app(
        monkeypatch, url, scenario, f"prioroute-it-{uuid.uuid4().hex[:8]}", tmp_path / "starts.log"
    )
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
