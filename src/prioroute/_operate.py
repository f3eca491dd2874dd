"""What operators need from a live broker: verify the queues, watch the tiers.

Nothing here creates or changes anything on the broker. ``verify`` declares a queue
passively to see it, and — only for a queue that exists — declares it once more with the
arguments prioroute would use: a no-op when they match, the broker's own
``PRECONDITION_FAILED`` when they do not, which is exactly what a worker would hit.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

import attrs
from celery import Celery, Task
from celery.signals import before_task_publish, task_prerun
from kombu import Connection, Consumer, Message, Queue
from kombu.utils.url import maybe_sanitize_url

from ._errors import PriorouteError

__all__ = [
    "PUBLISHED_HEADER",
    "WAIT_EVENT",
    "BrokerUnreachable",
    "QueueState",
    "TierWaits",
    "probe_queues",
    "watch",
]

#: The message header prioroute stamps on every task it publishes: when it was published,
#: in seconds since the epoch.
PUBLISHED_HEADER = "prioroute_published_at"
#: The Celery event a worker process sends once a second while it starts tasks: ``waits``,
#: a list of ``[tier, queue, seconds]``, how long each task waited between publish (or its
#: ETA) and its start.
WAIT_EVENT = "prioroute-task-waits"


class BrokerUnreachable(PriorouteError, ConnectionError):
    """The broker cannot be reached or refused the credentials."""


@attrs.frozen
class QueueState:
    """One queue as the broker sees it.

    Attributes:
        name: The queue.
        tiers: The tiers whose tasks it holds (empty for the default queue of lanes).
        exists: Whether the broker has it.
        depth: Messages waiting, or ``None`` if it does not exist.
        consumers: Workers consuming it; ``None`` when the broker cannot tell.
        mismatch: The broker's refusal when the queue exists with other arguments than
            prioroute declares, else ``None``.
    """

    name: str
    tiers: tuple[str, ...]
    exists: bool
    depth: int | None = None
    consumers: int | None = None
    mismatch: str | None = None

    @property
    def status(self) -> Literal["ok", "missing", "mismatch", "idle"]:
        """``mismatch`` (other arguments), ``missing``, ``idle`` (no consumer) or ``ok``."""
        if self.mismatch:
            return "mismatch"
        if not self.exists:
            return "missing"
        if self.consumers == 0:
            return "idle"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-able data, with its status."""
        return {**attrs.asdict(self), "tiers": list(self.tiers), "status": self.status}


def masked(app: Celery) -> str:
    """The app's broker URL with its password masked."""
    return str(maybe_sanitize_url(app.conf.broker_url or ""))


def _scrub(text: str, app: Celery, url: str | None = None) -> str:
    """*text* without the broker password, wherever an error message quoted it."""
    from urllib.parse import urlsplit

    for one in (url or app.conf.broker_url or "").split(";"):
        password = urlsplit(one.strip()).password
        if password:
            text = text.replace(password, "**")
    return text


def _expected(app: Celery) -> list[tuple[Queue, tuple[str, ...]]]:
    """The queues prioroute declares for *app*, with their tiers; else the app's own."""
    from ._configure import configured_registry, layout_of

    layout, registry = layout_of(app), configured_registry(app)
    declared = {q.name: q for q in app.amqp.queues.values()}
    if layout is None or registry is None:
        return [(queue, ()) for queue in declared.values()]
    order = sorted(layout.tiers, key=lambda t: -layout.tiers[t].urgency)
    result = []
    for name, tiers in layout.queues(registry).items():
        queue = declared.get(name) or layout.declare(name)
        result.append((queue, tuple(t for t in order if t in tiers)))
    return result


def _connect(
    app: Celery, timeout: float, *, url: str | None = None, what: str = "broker"
) -> Connection:
    """A live connection to *app*'s broker, or to *url* with *app*'s transport options.

    Raises:
        BrokerUnreachable: The broker is down or refused the credentials.
    """
    connection: Connection = app.connection_for_write(url=url) if url else app.connection_for_read()
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=math.ceil(timeout))
    except Exception as exc:
        connection.release()
        shown = str(maybe_sanitize_url(url)) if url else masked(app)
        raise BrokerUnreachable(
            f"cannot reach the {what} at {shown}: "
            f"{_scrub(f'{type(exc).__name__}: {exc}', app, url)}; check that it runs and that "
            "the URL's host, port and credentials are right"
        ) from None
    return connection


def waiting_messages(connection: Connection, queue: Queue) -> Iterator[Message]:
    """Every message waiting in *queue*, taken unacknowledged: those not acknowledged go
    back to the queue when the connection closes. Nothing if the queue does not exist."""
    bound = queue.bind(connection.channel())
    if connection.transport.driver_type != "redis":  # on Redis a missing list is empty
        try:
            bound.queue_declare(passive=True)
        except connection.channel_errors:
            return
    while (message := bound.get(no_ack=False)) is not None:
        yield message


def probe_queues(
    app: Celery, *, check_arguments: bool = True, timeout: float = 5.0
) -> list[QueueState]:
    """The state of every queue the app uses, read from the live broker.

    RabbitMQ reports depth and consumers itself. On Redis, depth is the length of each
    priority step's list and consumers come from the workers' ``active_queues`` (a
    one-second broadcast), ``None`` if no worker answers.

    Raises:
        BrokerUnreachable: The broker is down or refused the credentials.
    """
    connection = _connect(app, timeout)
    try:
        if connection.transport.driver_type == "redis":
            return _probe_redis(app, connection)
        return _probe_amqp(app, connection, check_arguments)
    finally:
        connection.release()


def _probe_amqp(app: Celery, connection: Connection, check_arguments: bool) -> list[QueueState]:
    states = []
    for queue, tiers in _expected(app):
        channel: Any = connection.channel()
        try:
            _, depth, consumers = channel.queue_declare(queue.name, passive=True)
        except connection.channel_errors:
            states.append(QueueState(queue.name, tiers, exists=False))
            continue
        finally:
            _close(channel)
        mismatch = None
        if check_arguments:
            channel = connection.channel()
            try:
                queue.bind(channel).queue_declare(passive=False)  # same arguments: a no-op
            except connection.channel_errors as exc:
                mismatch = str(exc)
            finally:
                _close(channel)
        states.append(QueueState(queue.name, tiers, True, depth, consumers, mismatch))
    return states


def _close(channel: Any) -> None:
    with contextlib.suppress(Exception):  # a channel the broker closed already
        channel.close()


def _probe_redis(app: Celery, connection: Connection) -> list[QueueState]:
    channel: Any = connection.default_channel
    client = channel.client
    consumers = _redis_consumers(app)
    states = []
    for queue, tiers in _expected(app):
        keys = [channel._q_for_pri(queue.name, step) for step in channel.priority_steps]
        depth = sum(int(client.llen(key)) for key in dict.fromkeys(keys))
        exchange = queue.exchange.name if queue.exchange is not None else queue.name
        bindings = client.smembers(channel.keyprefix_queue % exchange)
        bound = any(_text(b).endswith(channel.sep + queue.name) for b in bindings)
        count = None if consumers is None else consumers.get(queue.name, 0)
        states.append(QueueState(queue.name, tiers, bound or depth > 0, depth, count))
    return states


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _redis_consumers(app: Celery) -> dict[str, int] | None:
    replies = app.control.inspect(timeout=1.0).active_queues()
    if not replies:
        return None
    counts: dict[str, int] = {}
    for queues in replies.values():
        for queue in queues:
            counts[queue["name"]] = counts.get(queue["name"], 0) + 1
    return counts


# -- waits: publish timestamp in, event out ------------------------------------------------------


def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: stamp when a task was published (retries get a new stamp)."""
    if headers is not None:
        headers[PUBLISHED_HEADER] = time.time()


#: How often a worker process sends the waits it measured, in seconds.
FLUSH_INTERVAL = 1.0


class _WaitReporter:
    """Collects one worker process's task waits and sends them as one event per second.

    One event per task start would cost a publish per task (a third of the throughput of
    no-op tasks, measured); batching costs almost nothing. A daemon thread flushes what an
    idle process still holds.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.pending: list[tuple[str | None, str | None, float]] = []
        self.lock = threading.Lock()
        self.dispatcher: Any = None
        self.thread = threading.Thread(target=self._loop, name="prioroute-waits", daemon=True)
        self.thread.start()

    def add(self, tier: str | None, queue: str | None, wait: float) -> None:
        with self.lock:
            self.pending.append((tier, queue, round(wait, 6)))

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self.flush()

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            if self.dispatcher is None:
                # Best effort, like every Celery event: no publisher confirms.
                connection = self.app.connection_for_write(
                    transport_options={"confirm_publish": False}
                )
                self.dispatcher = self.app.events.Dispatcher(connection=connection, enabled=True)
            self.dispatcher.send(WAIT_EVENT, waits=batch)
        except Exception:  # never fail or stall a task for the monitor's sake
            self.dispatcher = None


_REPORTERS: dict[tuple[int, int], _WaitReporter] = {}


def _report_wait(task: Task[Any, Any] | None = None, **_: Any) -> None:
    """``task_prerun`` in the worker: note how long the task waited since it was published
    (or since its ETA); :class:`_WaitReporter` sends the notes to ``prioroute monitor``."""
    from ._configure import configured_registry, layout_of

    request = getattr(task, "request", None)
    published = getattr(request, PUBLISHED_HEADER, None)
    if task is None or published is None:
        return
    app = task.app
    registry, layout = configured_registry(app), layout_of(app)
    if registry is None or layout is None:
        return
    due = float(published)
    eta = getattr(request, "eta", None)
    if eta:
        with contextlib.suppress(ValueError):
            due = max(due, datetime.fromisoformat(str(eta)).timestamp())
    registration = registry.lookup(task.name)
    delivery = getattr(request, "delivery_info", None) or {}
    key = (id(app), os.getpid())  # one per worker process (prefork children fork)
    reporter = _REPORTERS.get(key)
    if reporter is None:
        reporter = _REPORTERS[key] = _WaitReporter(app)
    reporter.add(
        registration.tier if registration else None,
        delivery.get("routing_key"),
        max(0.0, time.time() - due),
    )


def connect_wait_reporting() -> None:
    """Stamp published tasks and report their waits (``configure()`` calls it)."""
    before_task_publish.connect(_stamp, weak=False, dispatch_uid="prioroute.stamp")
    task_prerun.connect(_report_wait, weak=False, dispatch_uid="prioroute.report_wait")


@attrs.frozen
class TierWaits:
    """How long one tier's tasks waited between publish and start, in one interval.

    Attributes:
        tier: The tier (``"(unregistered)"`` for tasks no tier names).
        started: Tasks that started.
        p50: Median wait in seconds, ``None`` if none started.
        p95: 95th percentile wait in seconds.
    """

    tier: str
    started: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, tier: str, waits: list[float]) -> TierWaits:
        ordered = sorted(waits)
        return cls(tier, len(ordered), _percentile(ordered, 50), _percentile(ordered, 95))


def _percentile(ordered: list[float], percent: float) -> float | None:
    if not ordered:
        return None
    index = max(0, math.ceil(percent / 100 * len(ordered)) - 1)
    return round(ordered[index], 6)


def _rates(
    queue: QueueState, previous: Mapping[str, int], started: Mapping[str, int], elapsed: float
) -> dict[str, Any]:
    """A queue's state with its deliver rate (tasks started from it per second) and, from
    the second snapshot on, its publish rate (depth change plus deliveries)."""
    delivered = started.get(queue.name, 0)
    published = None
    if queue.depth is not None and queue.name in previous:
        published = round((queue.depth - previous[queue.name] + delivered) / elapsed, 3)
    return {
        **queue.as_dict(),
        "deliver_rate": round(delivered / elapsed, 3),
        "publish_rate": published,
    }


def watch(app: Celery, *, interval: float = 5.0, timeout: float = 5.0) -> Iterator[dict[str, Any]]:
    """Yield one snapshot per *interval*: each queue's state and each tier's waits.

    Listens for the wait events workers send (``prioroute-task-waits``) and probes the
    queues passively at the end of each interval. Runs until the caller stops iterating.

    Raises:
        BrokerUnreachable: The broker is down or refused the credentials.
    """
    from ._configure import layout_of

    layout = layout_of(app)
    if layout is None:
        raise PriorouteError(
            f"app {app.main!r} is not configured by prioroute; call prioroute.configure(app)"
        )
    tiers = sorted(layout.tiers, key=lambda t: -layout.tiers[t].urgency)
    connection = _connect(app, timeout)
    waits: dict[str, list[float]] = {}
    started_from: dict[str, int] = {}

    def on_wait(event: Mapping[str, Any]) -> None:
        for tier, queue, wait in event.get("waits") or ():
            waits.setdefault(tier or "(unregistered)", []).append(float(wait))
            started_from[queue or ""] = started_from.get(queue or "", 0) + 1

    receiver = app.events.Receiver(
        connection, handlers={WAIT_EVENT: on_wait}, routing_key=WAIT_EVENT.replace("-", ".")
    )
    channel = connection.channel()
    try:
        (consumer,) = receiver.get_consumers(functools.partial(Consumer, channel), channel)
        with consumer:
            previous: dict[str, int] = {}
            while True:
                started = time.monotonic()
                deadline = started + interval
                while (remaining := deadline - time.monotonic()) > 0:
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=min(remaining, 0.5))
                elapsed = time.monotonic() - started
                queues = probe_queues(app, check_arguments=False, timeout=timeout)
                snapshot = {
                    "time": round(time.time(), 3),
                    "interval": round(elapsed, 3),
                    "queues": [_rates(q, previous, started_from, elapsed) for q in queues],
                    "tiers": [
                        {
                            **attrs.asdict(TierWaits.of(tier, waits.get(tier, []))),
                            "rate": round(len(waits.get(tier, [])) / elapsed, 3),
                        }
                        for tier in [*tiers, *sorted(set(waits) - set(tiers))]
                    ],
                }
                previous = {q.name: q.depth for q in queues if q.depth is not None}
                waits.clear()
                started_from.clear()
                yield snapshot
    finally:
        _close(channel)
        connection.release()
