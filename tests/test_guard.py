"""The poison-message guard and dead letters, on kombu's in-memory broker.

The integration tests (``tests/integration/test_poison.py``) run the same paths with real
workers whose processes die; these pin the decisions one delivery at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Celery
from kombu import Message, Queue

import prioroute
from prioroute import Registry, Tier
from prioroute._build import GUARDED_REQUEST
from prioroute._dead import DeadLetter
from prioroute._guard import (
    DEAD_FROM,
    DEAD_REASON,
    DELIVERIES,
    GuardedRequest,
    _on_rejected,
    deliveries,
)

from ._memory import reset_memory_broker

QUEUE = "guarded"


@pytest.fixture(name="app")
def _app() -> Iterator[Celery]:
    reset_memory_broker()
    app = Celery("guard", broker="memory://", set_as_current=False)
    registry = Registry(
        [Tier("critical", 2, max_deliveries=3), Tier("low", 1, max_deliveries=None)]
    )

    @registry.critical
    @app.task(name="guard.crash")
    def crash(number: int) -> None: ...

    @registry.low
    @app.task(name="guard.endless")
    def endless() -> None: ...

    prioroute.configure(app, registry, queue=QUEUE)
    yield app
    app.close()


def _take(app: Celery, name: str = QUEUE) -> Message | None:
    with app.connection_for_read() as connection:
        message: Message | None = Queue(name).bind(connection.default_channel).get(no_ack=True)
        return message


def _request(app: Celery, message: Message) -> GuardedRequest:
    task = app.tasks[message.headers["task"]]
    return GuardedRequest(
        message,
        app=app,
        task=task,
        on_ack=lambda *_: None,
        on_reject=lambda _log, _errors, requeue: app.conf.update(requeued=requeue),
    )


def _lose_worker(request: GuardedRequest) -> None:
    try:
        raise WorkerLostError("Worker exited prematurely: exitcode 13 Job: 7.")
    except WorkerLostError:
        request.on_failure(ExceptionInfo(), send_failed_event=False)


class TestGuard:
    """A message whose worker dies is counted, and dead-lettered at the tier's limit."""

    def test_tiers_get_the_guard_where_the_broker_keeps_no_count(self, app: Celery) -> None:
        assert app.tasks["guard.crash"].Request == GUARDED_REQUEST
        assert app.tasks["guard.crash"].prioroute_max_deliveries == 3
        # max_deliveries=None: Celery's own requeue, for ever.
        assert app.tasks["guard.endless"].Request == "celery.worker.request:Request"

    def test_quorum_queues_count_themselves(self) -> None:
        settings = prioroute.build(Registry(), broker="rabbitmq-quorum")
        assert all("Request" not in policy for policy in settings.task_annotations.values())

    def test_redelivered_with_one_more_delivery(self, app: Celery) -> None:
        result = app.tasks["guard.crash"].apply_async((1,))
        message = _take(app)
        assert message is not None
        _lose_worker(_request(app, message))
        again = _take(app)
        assert again is not None
        assert again.headers["id"] == result.id
        assert again.headers[DELIVERIES] == 2
        assert again.properties.get("priority") == message.properties.get("priority")
        assert "requeued" not in app.conf  # republished and acknowledged, not requeued

    def test_dead_lettered_after_max_deliveries_with_headers_intact(self, app: Celery) -> None:
        app.tasks["guard.crash"].apply_async((1,), headers={DELIVERIES: 3, "trace": "x"})
        message = _take(app)
        assert message is not None
        _lose_worker(_request(app, message))
        assert _take(app) is None
        dead = _take(app, f"{QUEUE}.dead")
        assert dead is not None
        assert dead.headers["trace"] == "x"
        assert dead.headers["task"] == "guard.crash"
        origin = {"exchange": message.delivery_info["exchange"], "routing_key": QUEUE}
        assert dead.headers[DEAD_FROM] == origin
        assert dead.headers[DEAD_REASON] == (
            "delivered 3 times and never completed (last: "
            "WorkerLostError: Worker exited prematurely: exitcode 13 Job: 7.)"
        )

    def test_hard_time_limit_counts_as_a_delivery(self, app: Celery) -> None:
        # acks_on_timeout=False (the tier's policy): Celery requeues, the guard counts.
        assert app.tasks["guard.crash"].acks_on_timeout is False
        app.tasks["guard.crash"].apply_async((1,), headers={DELIVERIES: 3})
        message = _take(app)
        assert message is not None
        _request(app, message).on_timeout(soft=False, timeout=5)
        dead = _take(app, f"{QUEUE}.dead")
        assert dead is not None
        assert dead.headers[DEAD_REASON] == (
            "delivered 3 times and never completed (last: TimeLimitExceeded: hard time limit of 5 s)"
        )

    def test_soft_time_limit_changes_nothing(self, app: Celery) -> None:
        app.tasks["guard.crash"].apply_async((1,))
        message = _take(app)
        assert message is not None
        request = _request(app, message)
        request.on_timeout(soft=True, timeout=5)
        assert not request.acknowledged
        assert _take(app) is None

    def test_unguarded_tier_is_requeued_by_celery(self, app: Celery) -> None:
        app.tasks["guard.endless"].apply_async()
        message = _take(app)
        assert message is not None
        _lose_worker(_request(app, message))
        assert app.conf.requeued is True

    def test_broker_refusing_the_copy_requeues(
        self, app: Celery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        def refuse(*_: Any, **__: Any) -> None:
            raise ConnectionResetError("broker went away")

        monkeypatch.setattr("prioroute._guard.republish", refuse)
        app.tasks["guard.crash"].apply_async((1,))
        message = _take(app)
        assert message is not None
        _lose_worker(_request(app, message))
        assert app.conf.requeued is True
        assert "requeueing it uncounted" in caplog.text

    @pytest.mark.parametrize(
        ("headers", "count"),
        [({}, 1), ({DELIVERIES: 4}, 4), ({DELIVERIES: "x"}, 1), ({DELIVERIES: 0}, 1), (None, 1)],
    )
    def test_deliveries(self, headers: Any, count: int) -> None:
        assert deliveries(headers) == count


class TestDeadLetter:
    """Reading dead letters written by prioroute or by RabbitMQ."""

    def _message(self, headers: dict[str, Any]) -> Message:
        return Message(body=b"[]", headers={"id": "t1", "task": "proj.t", **headers})

    def test_broker_dead_lettered(self) -> None:
        death = {"reason": b"delivery_limit", "exchange": "lane", "routing-keys": ["lane"]}
        letter = DeadLetter.of("lane.dead", self._message({"x-death": [death]}), 5)
        assert letter.deliveries == 6
        assert letter.reason == (
            "the broker dead-lettered it (delivery_limit) after 6 deliveries: x-delivery-limit is 5"
        )
        assert (letter.exchange, letter.routing_key) == ("lane", "lane")

    def test_rejected_without_a_limit(self) -> None:
        letter = DeadLetter.of("lane.dead", self._message({"x-death": [{"reason": "rejected"}]}))
        assert (letter.deliveries, letter.reason) == (1, "the broker dead-lettered it (rejected)")
        assert letter.routing_key == "lane"  # from the dead-letter queue's name

    def test_args_shown(self) -> None:
        letter = DeadLetter.of(
            "q.dead", self._message({"argsrepr": "(1, 2)", "kwargsrepr": "{'a': 1}"})
        )
        assert letter.args == "(1, 2), {'a': 1}"
        assert letter.as_dict()["args"] == "(1, 2), {'a': 1}"


class TestRejected:
    """Messages a worker rejects (unknown task, not a task) go to the dead-letter queue."""

    def _publish_unknown(self, app: Celery) -> Message:
        app.send_task("proj.nobody_has_this", args=(1,), task_id="u1")
        message = _take(app)
        assert message is not None
        return message

    def test_dead_lettered_with_the_reason(self, app: Celery) -> None:
        message = self._publish_unknown(app)
        consumer = type("Consumer", (), {"app": app})()
        _on_rejected(sender=consumer, message=message, exc=KeyError("x"), name="proj.nobody")
        dead = _take(app, f"{QUEUE}.dead")
        assert dead is not None
        assert dead.headers["id"] == "u1"
        assert dead.headers[DEAD_REASON] == (
            "the worker rejected it (no task 'proj.nobody' is registered in the worker)"
        )

    def test_invalid_message_reason(self, app: Celery) -> None:
        message = self._publish_unknown(app)
        consumer = type("Consumer", (), {"app": app})()
        _on_rejected(sender=consumer, message=message, exc=ValueError("bad eta"))
        dead = _take(app, f"{QUEUE}.dead")
        assert dead is not None
        assert dead.headers[DEAD_REASON] == "the worker rejected it (ValueError: bad eta)"

    def test_apps_prioroute_did_not_configure_are_left_alone(self) -> None:
        other = Celery("other", broker="memory://", set_as_current=False)
        message = Message(body=b"{}", headers={})
        _on_rejected(sender=type("Consumer", (), {"app": other})(), message=message)
        _on_rejected(sender=None, message=message)

    def test_a_broker_refusing_the_copy_is_logged(
        self, app: Celery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        message = self._publish_unknown(app)

        def refuse(*_: Any, **__: Any) -> None:
            raise ConnectionResetError("broker went away")

        monkeypatch.setattr("prioroute._guard.republish", refuse)
        _on_rejected(sender=type("Consumer", (), {"app": app})(), message=message)
        assert "could not dead-letter a rejected message" in caplog.text
