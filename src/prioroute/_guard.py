"""The poison-message guard: a delivery count for brokers that keep none.

With ``acks_late`` and ``reject_on_worker_lost``, Celery requeues a task whose worker
process died, and the broker hands it out again: for ever, if the task itself kills every
worker that runs it (``os._exit``, an OOM kill, a segfault in a C extension), while its lane
spends its workers on it. RabbitMQ quorum queues count deliveries themselves
(``x-delivery-limit``); classic queues, Redis and SQS do not. For tiers on those brokers
:meth:`~prioroute.Layout.annotation` gives each task this module's request class, which
republishes the message with a delivery count instead of requeueing it, and after the
tier's ``max_deliveries`` sends it to its queue's dead-letter queue, ``<queue>.dead``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.signals import task_rejected, task_unknown
from celery.utils.log import get_logger
from celery.worker.request import Request
from kombu import Exchange, Message, Queue

from ._profiles import dead_letter_queue

__all__ = [
    "DEAD_FROM",
    "DEAD_REASON",
    "DELIVERIES",
    "GuardedRequest",
    "connect_dead_lettering",
    "dead_letter",
    "deliveries",
    "republish",
]

#: The message header that counts deliveries, the first being 1.
DELIVERIES = "prioroute_deliveries"
#: Headers a dead-lettered message carries: why, and where it came from.
DEAD_REASON = "prioroute_dead_reason"
DEAD_FROM = "prioroute_dead_from"
DEAD_AT = "prioroute_dead_at"

logger = get_logger(__name__)


def deliveries(headers: Any) -> int:
    """How often the message with *headers* has been delivered, this time included."""
    try:
        return max(1, int(headers.get(DELIVERIES, 1)))
    except (AttributeError, TypeError, ValueError):
        return 1


class GuardedRequest(Request):
    """Celery's request, counting deliveries of a message whose worker process died or
    whose hard time limit stopped it.

    Where Celery would requeue the message, this republishes it to the same exchange and
    routing key, with the same priority and a ``prioroute_deliveries`` header one higher,
    and acknowledges the original; after the task's ``prioroute_max_deliveries`` it
    publishes the message, headers intact, to ``<queue>.dead`` and records the task as
    failed. If the broker cannot take the copy, the message is requeued as Celery would:
    nothing is lost.
    """

    _prioroute_failure: str | None = None

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        failure = exc_info.exception
        failure = getattr(failure, "exc", failure)  # ExceptionWithTraceback
        self._prioroute_failure = f"{type(failure).__name__}: {failure}"
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._prioroute_failure = f"TimeLimitExceeded: hard time limit of {timeout:g} s"
        super().on_timeout(soft, timeout)

    def reject(self, requeue: bool = False) -> None:
        limit = getattr(self.task, "prioroute_max_deliveries", None)
        if not requeue or self.acknowledged or not limit:
            super().reject(requeue=requeue)
            return
        message: Message = self._message  # type: ignore[attr-defined]
        count = deliveries(message.headers)
        try:
            if count >= limit:
                self._dead_letter(message, count)
            else:
                headers = {**(message.headers or {}), DELIVERIES: count + 1}
                republish(self.task.app, message, headers)
        except Exception as exc:  # the broker refused the copy: requeue, lose nothing
            logger.warning(
                "prioroute could not republish task %s[%s] (%r); requeueing it uncounted",
                self.task_name,
                self.id,
                exc,
            )
            super().reject(requeue=True)
            return
        self.acknowledge()
        if count < limit:
            self.send_event("task-rejected", requeue=True)

    def _dead_letter(self, message: Message, count: int) -> None:
        failure = self._prioroute_failure
        reason = f"delivered {count} times and never completed" + (
            f" (last: {failure})" if failure is not None else ""
        )
        queue = dead_letter(self.task.app, message, reason, count)
        logger.error(
            "Task %s[%s] dead-lettered to %s: %s", self.task_name, self.id, queue.name, reason
        )
        error = WorkerLostError(f"dead-lettered to {queue.name!r}: {reason}")
        self.task.backend.mark_as_failure(
            self.id,
            error,
            request=self._context,  # type: ignore[attr-defined]
            store_result=self.store_errors,
        )
        self.send_event("task-failed", exception=repr(error))


def dead_letter(app: Any, message: Message, reason: str, count: int = 1) -> Queue:
    """Publish a copy of *message*, headers intact, to the dead-letter queue of the queue
    it came from, saying why; returns that dead-letter queue."""
    info = message.delivery_info or {}
    source = str(info.get("routing_key") or "")
    queue = dead_letter_queue(source or "prioroute")
    headers = {
        **(message.headers or {}),
        DELIVERIES: count,
        DEAD_REASON: reason,
        DEAD_FROM: {"exchange": str(info.get("exchange") or ""), "routing_key": source},
        DEAD_AT: datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    republish(
        app, message, headers, exchange=queue.exchange, routing_key=queue.name, declare=[queue]
    )
    return queue


def _on_rejected(
    sender: Any = None,
    message: Message | None = None,
    exc: BaseException | None = None,
    **_: Any,
) -> None:
    """Dead-letter a message the worker rejected: an unknown task, a message that is not a
    Celery task, an invalid one. Celery drops it otherwise, except from quorum queues,
    whose broker dead-letters rejected messages itself."""
    from ._configure import layout_of

    app = getattr(sender, "app", None)
    layout = None if app is None else layout_of(app)
    if message is None or layout is None or layout.profile.queue_type == "quorum":
        return
    name = _.get("name")  # task_unknown says which task
    if name is not None:
        what = f"no task {name!r} is registered in the worker"
    elif exc is not None:
        what = f"{type(exc).__name__}: {exc}"
    else:
        what = "not a Celery task message"
    try:
        queue = dead_letter(app, message, f"the worker rejected it ({what})")
    except Exception as error:  # nothing more to do: say so loudly
        logger.error("prioroute could not dead-letter a rejected message (%r); it is lost", error)
        return
    logger.error("A message the worker rejected was dead-lettered to %s: %s", queue.name, what)


def connect_dead_lettering() -> None:
    """Dead-letter the messages workers of prioroute-configured apps reject."""
    for signal in (task_rejected, task_unknown):
        signal.connect(_on_rejected, weak=False, dispatch_uid="prioroute.dead_letter_rejected")


def republish(
    app: Any,
    message: Message,
    headers: dict[str, Any],
    *,
    exchange: Exchange | str | None = None,
    routing_key: str | None = None,
    declare: list[Any] | None = None,
) -> None:
    """Publish a copy of *message* with *headers*, by default where it came from."""
    info = message.delivery_info or {}
    properties = message.properties or {}
    with app.producer_or_acquire() as producer:
        producer.publish(
            message.body,
            exchange=(info.get("exchange") or "") if exchange is None else exchange,
            routing_key=info.get("routing_key") if routing_key is None else routing_key,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            priority=properties.get("priority"),
            correlation_id=properties.get("correlation_id"),
            reply_to=properties.get("reply_to"),
            delivery_mode=2,
            declare=declare or [],
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )
