"""Dead-lettered tasks: list them, and requeue the ones a person decides to run again."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from celery import Celery
from kombu import Connection, Message, Queue

from ._guard import DEAD_AT, DEAD_FROM, DEAD_REASON, DELIVERIES, deliveries, republish
from ._operate import _connect, _expected, waiting_messages
from ._profiles import dead_letter_queue

__all__ = ["DeadLetter", "dead_letters", "requeue_dead"]

#: Headers that describe a message's time in the dead-letter queue, dropped on requeue.
_DEAD_HEADERS = (
    DELIVERIES,
    DEAD_REASON,
    DEAD_FROM,
    DEAD_AT,
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-delivery-count",
)


@attrs.frozen
class DeadLetter:
    """A task in a dead-letter queue.

    Attributes:
        queue: The dead-letter queue it is in (``<queue>.dead``).
        task_id: The task's id.
        task: The task's name.
        args: How the task's arguments looked (``argsrepr``, ``kwargsrepr``).
        deliveries: How often it was delivered before it was dead-lettered.
        reason: Why, as prioroute or the broker recorded it.
        exchange: The exchange :func:`requeue_dead` publishes it to again.
        routing_key: The routing key it is published with again.
        dead_at: When, as an ISO 8601 time, if known.
    """

    queue: str
    task_id: str
    task: str
    args: str
    deliveries: int
    reason: str
    exchange: str
    routing_key: str
    dead_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The dead letter as JSON-ready data."""
        return attrs.asdict(self)

    @classmethod
    def of(cls, queue: str, message: Message, delivery_limit: int | None = None) -> DeadLetter:
        """Read a dead letter from *message*, dead-lettered by prioroute or by the broker
        (from a queue with *delivery_limit*)."""
        headers: dict[str, Any] = message.headers or {}
        origin: dict[str, Any] = headers.get(DEAD_FROM) or {}
        death: dict[str, Any] = (headers.get("x-death") or [{}])[0]  # RabbitMQ's own
        exchange = origin.get("exchange", death.get("exchange", ""))
        routing_key = origin.get("routing_key") or next(
            iter(death.get("routing-keys") or ()), queue.removesuffix(".dead")
        )
        if DEAD_REASON in headers:
            reason, count = str(headers[DEAD_REASON]), deliveries(headers)
        else:
            cause = _text(death.get("reason", "unknown"))
            # A quorum queue dead-letters after x-delivery-limit redeliveries, and says so.
            count = delivery_limit + 1 if cause == "delivery_limit" and delivery_limit else 1
            reason = f"the broker dead-lettered it ({cause})" + (
                f" after {count} deliveries: x-delivery-limit is {delivery_limit}"
                if count > 1
                else ""
            )
        shown = (headers.get("argsrepr"), headers.get("kwargsrepr"))
        args = ", ".join(str(a) for a in shown if a and a not in ("()", "{}"))
        return cls(
            queue=queue,
            task_id=str(headers.get("id", "")),
            task=str(headers.get("task", "")),
            args=args,
            deliveries=count,
            reason=reason,
            exchange=_text(exchange),
            routing_key=_text(routing_key),
            dead_at=headers.get(DEAD_AT),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dead_queues(app: Celery) -> list[tuple[Queue, int | None]]:
    """Each queue's dead-letter queue, and the queue's delivery limit if the broker keeps one."""
    result = []
    for queue, _ in _expected(app):
        arguments = queue.queue_arguments or {}
        quorum = arguments.get("x-queue-type") == "quorum"
        limit = arguments.get("x-delivery-limit")
        result.append((dead_letter_queue(queue.name, quorum=quorum), limit))
    return result


_Letter = tuple[DeadLetter, Message]


@contextmanager
def _messages(app: Celery, timeout: float) -> Iterator[Iterator[_Letter]]:
    """Every message in the app's dead-letter queues, taken unacknowledged: those not
    acknowledged go back to their queue when the connection closes."""
    connection: Connection = _connect(app, timeout)
    try:

        def read() -> Iterator[_Letter]:
            for queue, limit in _dead_queues(app):
                for message in waiting_messages(connection, queue):
                    yield DeadLetter.of(queue.name, message, limit), message

        yield read()
    finally:
        connection.release()


def dead_letters(app: Celery, *, timeout: float = 5.0) -> list[DeadLetter]:
    """The tasks in the dead-letter queues of *app*'s queues, oldest first in each queue.

    Reading changes nothing: every message goes back to its queue.

    Raises:
        BrokerUnreachable: The broker is down or refused the credentials.
    """
    with _messages(app, timeout) as messages:
        return [letter for letter, _ in messages]


def requeue_dead(
    app: Celery, task_ids: Collection[str] | None = None, *, timeout: float = 5.0
) -> list[DeadLetter]:
    """Publish dead-lettered tasks to the queue they came from again, with a fresh
    delivery count, and remove them from the dead-letter queue; *task_ids* ``None``
    requeues all. Returns what was requeued.

    Raises:
        BrokerUnreachable: The broker is down or refused the credentials.
    """
    requeued = []
    with _messages(app, timeout) as messages:
        for letter, message in messages:
            if task_ids is not None and letter.task_id not in task_ids:
                continue
            headers = {k: v for k, v in (message.headers or {}).items() if k not in _DEAD_HEADERS}
            republish(
                app, message, headers, exchange=letter.exchange, routing_key=letter.routing_key
            )
            message.ack()
            requeued.append(letter)
    return requeued
