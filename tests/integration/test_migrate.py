"""`prioroute migrate` on real brokers: Redis to RabbitMQ, re-routed, losing none.

Bounded: at most 1,000 small messages per test, one deadline each; every process the tests
start is stopped by PID, every queue and key they create is deleted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kombu import Connection, Queue

import prioroute
from prioroute._migrate import INFLIGHT

from .conftest import APP, CONCURRENCY, ROOT, Scenario, import_app, wait_for

pytestmark = [
    pytest.mark.broker,
    # The test app is imported once per broker, and @app.task shares tasks between apps.
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]

TASKS = 1000
DEADLINE = 180.0


class Apps:
    """The test app loaded once per broker, around one queue name."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, amqp_url: str, redis_url: str
    ) -> None:
        self.monkeypatch = monkeypatch
        self.amqp_url, self.redis_url = amqp_url, redis_url
        self.queue = f"prioroute-it-{uuid.uuid4().hex[:8]}"
        self.log = tmp_path / "starts.log"
        self.loaded: list[ModuleType] = []

    def load(self, url: str, mode: str = "prioroute") -> ModuleType:
        """The app on *url*; the environment stays set for workers and the CLI."""
        scenario = Scenario(
            f"{mode} on {url}", "redis" if url.startswith("redis") else "amqp", mode
        )
        module = import_app(self.monkeypatch, url, scenario, self.queue, self.log)
        self.loaded.append(module)
        return module

    def redis_depth(self) -> int:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            return sum(client.llen(key) for key in client.scan_iter(match=f"{self.queue}*"))
        finally:
            client.close()

    def inflight(self) -> int:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            return int(client.llen(INFLIGHT))
        finally:
            client.close()

    def amqp_ids(self) -> list[str]:
        """Every task id waiting in the RabbitMQ queue (read and put back)."""
        return [headers["id"] for headers in self.amqp_headers()]

    def amqp_headers(self) -> list[dict[str, Any]]:
        """The headers of every task waiting in the RabbitMQ queue (read and put back)."""
        found = []
        with Connection(self.amqp_url) as connection:
            bound = Queue(self.queue, no_declare=True).bind(connection.channel())
            try:
                bound.queue_declare(passive=True)
            except connection.channel_errors:
                return []
            while (message := bound.get(no_ack=False)) is not None:
                found.append({**message.headers, "priority": message.properties.get("priority")})
        return found

    def cleanup(self) -> None:
        import redis

        for module in self.loaded:
            module.app.close()
        client = redis.Redis.from_url(self.redis_url)
        for key in [*client.scan_iter(match=f"*{self.queue}*"), INFLIGHT]:
            client.delete(key)
        client.close()
        with Connection(self.amqp_url) as connection:
            channel: Any = connection.default_channel
            for name in (self.queue, f"{self.queue}.dead", f"{self.queue}.prioroute-recreate"):
                channel.queue_delete(name)
                channel.exchange_delete(name)


@pytest.fixture(name="apps")
def _apps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, amqp_url: str, redis_url: str
) -> Iterator[Apps]:
    apps = Apps(monkeypatch, tmp_path, amqp_url, redis_url)
    yield apps
    apps.cleanup()


def _publish_backlog(app: ModuleType, count: int) -> list[str]:
    """*count* tasks, every fifth one critical, the rest low."""
    return [
        (app.critical if number % 5 == 4 else app.low).delay(number).id for number in range(count)
    ]


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "prioroute", "-A", APP, "migrate", "--format", "json", *args],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_redis_backlog_moves_to_rabbitmq_and_critical_starts_first(
    apps: Apps, start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]]
) -> None:
    on_redis = apps.load(apps.redis_url)
    published = _publish_backlog(on_redis, TASKS)
    on_redis.app.send_task("it.no_such_task", args=(1,))  # stays: the app has no such task
    with on_redis.app.producer_or_acquire() as producer:  # stays: no worker could decode it
        producer.publish(
            b"{not json",
            routing_key=apps.queue,
            headers={"task": "it.low", "id": "bad-body"},
            content_type="application/json",
            content_encoding="utf-8",
        )
    on_rabbit = apps.load(apps.amqp_url)

    result = prioroute.migrate(on_rabbit.app, apps.redis_url)

    print(f"\nmigrated {result.total} in {result.seconds:.2f} s: {result.as_dict()}")
    assert result.moved == {apps.queue: TASKS}
    assert result.tiers == {"low": 800, "critical": 200}
    assert result.unplaceable == {
        "no task 'it.no_such_task' in app 'prio_it'": 1,
        "its application/json body does not decode": 1,
    }
    assert apps.redis_depth() == 2
    assert apps.inflight() == 0
    assert sorted(apps.amqp_ids()) == sorted(published)

    workers = start_workers(on_rabbit)
    lines = wait_for(apps.log, TASKS, workers)
    positions = [i for i, line in enumerate(lines) if line.startswith("critical")]
    print(f"RabbitMQ start positions of the 200 critical tasks: {positions[0]}..{positions[-1]}")
    # Migrated as RabbitMQ numbers them: every critical task starts before the low backlog.
    assert positions[-1] < 200 + 2 * CONCURRENCY + 8


def test_killed_migration_rerun_loses_nothing(apps: Apps) -> None:
    on_redis = apps.load(apps.redis_url)
    published = _publish_backlog(on_redis, TASKS)
    apps.load(apps.amqp_url)
    first = _cli("--from", apps.redis_url)
    stop = time.monotonic() + DEADLINE
    while apps.redis_depth() > TASKS * 0.6 and time.monotonic() < stop:
        assert first.poll() is None, first.communicate()
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)  # mid-way, whatever it is doing
    first.communicate(timeout=30)
    in_flight = apps.inflight()
    rest = _cli("--from", apps.redis_url)
    out, err = rest.communicate(timeout=DEADLINE)
    assert rest.returncode == 0, err
    summary = json.loads(out)
    ids = apps.amqp_ids()
    counts = Counter(ids)
    duplicated = len(ids) - len(counts)
    print(
        f"\nkilled after {TASKS - apps.redis_depth() - summary['total']} moved, {in_flight} in "
        f"flight; rerun moved {summary['total']}, recovered {summary['recovered']}; "
        f"published {TASKS}, arrived {len(counts)}, lost {TASKS - len(counts)}, "
        f"duplicated {duplicated}"
    )
    assert set(counts) == set(published)
    assert in_flight <= 1
    assert summary["recovered"] == in_flight
    assert duplicated <= in_flight
    assert apps.redis_depth() == 0
    assert apps.inflight() == 0


def test_tiers_in_stages_and_dry_run(apps: Apps) -> None:
    on_redis = apps.load(apps.redis_url)
    _publish_backlog(on_redis, 100)  # 80 low, 20 critical
    on_rabbit = apps.load(apps.amqp_url)

    dry = prioroute.migrate(on_rabbit.app, apps.redis_url, dry_run=True)
    assert (dry.dry_run, dry.total, dry.tiers) == (True, 100, {"low": 80, "critical": 20})
    assert apps.redis_depth() == 100  # nothing touched
    assert apps.amqp_ids() == []

    low = prioroute.migrate(on_rabbit.app, apps.redis_url, tiers=["low"], limit=50)
    assert (low.total, low.tiers) == (50, {"low": 50})
    assert low.left == {"tier 'critical' not selected": 20, "over the limit": 30}
    rest = prioroute.migrate(on_rabbit.app, apps.redis_url, tiers=["low"])
    assert rest.tiers == {"low": 30}
    assert apps.redis_depth() == 20  # the critical tier waits for its stage
    assert len(apps.amqp_ids()) == 80

    with pytest.raises(prioroute.MigrationError, match=r"unknown tier\(s\) 'urgent'"):
        prioroute.migrate(on_rabbit.app, apps.redis_url, tiers=["urgent"])


def test_recreate_a_queue_with_prioritys_arguments_keeps_every_task(apps: Apps) -> None:
    plain = apps.load(apps.amqp_url, mode="plain")  # the queue, declared without x-max-priority
    published = _publish_backlog(plain, 300)
    app = apps.load(apps.amqp_url).app
    (before,) = [s for s in prioroute._operate.probe_queues(app) if s.name == apps.queue]
    assert before.status == "mismatch"

    result = prioroute.recreate_queue(app, apps.queue)

    (after,) = [s for s in prioroute._operate.probe_queues(app) if s.name == apps.queue]
    print(f"\nrecreated {apps.queue}: moved {result.total}, depth {after.depth}")
    assert after.status != "mismatch"
    assert after.depth == 300
    assert sorted(apps.amqp_ids()) == sorted(published)
    assert result.tiers == {"low": 240, "critical": 60}


def test_eta_and_headers_are_kept(apps: Apps) -> None:
    on_redis = apps.load(apps.redis_url)
    later = on_redis.critical.apply_async((1,), countdown=3600, headers={"trace": "abc"})
    sent = on_redis.app.send_task("it.low", args=(2,), retries=2, root_id="root-1")
    on_rabbit = apps.load(apps.amqp_url)
    assert prioroute.migrate(on_rabbit.app, apps.redis_url).total == 2
    by_id = {h["id"]: h for h in apps.amqp_headers()}
    assert by_id[later.id]["eta"] is not None
    assert by_id[later.id]["trace"] == "abc"
    assert by_id[later.id]["priority"] == 2  # critical, numbered the RabbitMQ way
    assert (by_id[sent.id]["retries"], by_id[sent.id]["root_id"]) == (2, "root-1")
    assert by_id[sent.id]["priority"] == 0
