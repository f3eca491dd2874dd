"""Malformed messages published straight to a tier's queue never stop its worker or lane.

A body that is not JSON, a task name no worker knows, a message that is not a Celery task
and a call with the wrong number of arguments go in ahead of 100 healthy tasks; the
healthy tasks all complete, the worker lives on, nothing is left in the queue, and the
messages Celery rejects are in the dead-letter queue. Bounded: 104 messages, one deadline.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import prioroute

from .conftest import Scenario, lines_of, scenarios

pytestmark = pytest.mark.broker

HEALTHY = 100
DEADLINE = 120.0


_scenario = scenarios(
    Scenario("rabbitmq-classic", "amqp", topology="shared", tiers="bounded"),
    Scenario("redis", "redis", tiers="bounded"),
    Scenario("rabbitmq-quorum", "amqp", profile="rabbitmq-quorum", tiers="bounded"),
)


def _publish_bad(app: ModuleType) -> None:
    """Publish the malformed messages to the critical tier's queue, as a buggy producer
    in another language or an old deployment would."""
    celery = app.app
    route = celery.amqp.router.route({}, "it.work.critical")
    queue, priority = route["queue"], route.get("priority")
    raw = [
        (b"{not json", {"task": "it.work.critical", "id": "bad-json", "lang": "py"}),
        (
            json.dumps([[1], {}, {"callbacks": None, "errbacks": None, "chain": None}]).encode(),
            {"task": "it.no_such_task", "id": "unknown-task", "lang": "py", "argsrepr": "(1,)"},
        ),
        (json.dumps({"hello": "world"}).encode(), {}),  # not a Celery task message at all
    ]
    with celery.producer_or_acquire() as producer:
        for body, headers in raw:
            producer.publish(
                body,
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                priority=priority,
                declare=[queue],
            )
    # Celery checks arguments when a task object publishes; send_task does not.
    celery.send_task("it.work.critical", args=(1, 2, 3, 4), task_id="wrong-arguments")


def test_malformed_messages_do_not_stop_the_lane(
    scenario: Scenario,
    it_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "starts.log"
    _publish_bad(it_app)
    healthy = [it_app.work_critical, it_app.work_normal, it_app.work_low]
    for number in range(HEALTHY):
        healthy[number % 3].delay(number)
    workers = start_workers(it_app)
    stop = time.monotonic() + DEADLINE
    done: set[str] = set()
    while time.monotonic() < stop and len(done) < HEALTHY:
        done = {line.split()[1] for line in lines_of(log) if line.startswith("done-")}
        assert all(w.poll() is None for w in workers), "a worker exited"
        time.sleep(0.1)
    dead: list[prioroute.DeadLetter] = []
    while time.monotonic() < stop and len(dead) < 2:  # dead-lettering follows the reject
        dead = prioroute.dead_letters(it_app.app)
        time.sleep(0.2)
    time.sleep(1)  # anything requeued would be back in the queue by now
    states = prioroute._operate.probe_queues(it_app.app, check_arguments=False)
    left = sum(s.depth or 0 for s in states)
    print(
        f"\n{scenario.id}: 4 malformed + {HEALTHY} healthy; healthy completed {len(done)}, "
        f"left in queues {left}, dead-lettered: "
        + "; ".join(f"{d.task_id or '(no id)'}: {d.reason}" for d in dead)
    )
    assert len(done) == HEALTHY
    assert all(w.poll() is None for w in workers)
    assert left == 0
    reasons = {d.task_id: d.reason for d in dead}
    assert set(reasons) == {"unknown-task", ""}  # the unknown task and the non-task message
    if scenario.profile != "rabbitmq-quorum":
        assert reasons["unknown-task"] == (
            "the worker rejected it (no task 'it.no_such_task' is registered in the worker)"
        )
        assert reasons[""] == "the worker rejected it (not a Celery task message)"
    else:
        assert all("(rejected)" in r for r in reasons.values())
