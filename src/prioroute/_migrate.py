"""Move waiting tasks between brokers and queue layouts, re-routed, losing none.

Each message is re-routed by its task name through the app's routing — the queue and
priority prioroute gives it on the *destination* broker — published there (with publisher
confirms on RabbitMQ), and only then removed from the source. A crash loses nothing: on
RabbitMQ the source keeps every message not yet acknowledged; on Redis the message being
moved waits in an in-flight list, which the next run publishes first. So a rerun
continues, and at most the message in flight arrives twice.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import attrs
from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.utils.url import maybe_sanitize_url

from ._errors import MigrationError
from ._operate import BrokerUnreachable, _connect, waiting_messages
from ._profiles import REDIS_SEP

__all__ = ["INFLIGHT", "Migration", "migrate", "recreate_queue"]

#: The Redis list that holds the message a migration is moving (the crash-safe step).
INFLIGHT = "prioroute.migrate.inflight"
#: Redis priority steps a source may use: kombu's default (0, 3, 6, 9) and prioroute's.
_REDIS_STEPS = range(10)


@attrs.frozen
class Migration:
    """What a migration did (or, with ``dry_run``, would do).

    Attributes:
        source: The source broker, password masked.
        destination: The destination broker, password masked.
        dry_run: Whether nothing was changed.
        moved: Messages moved (or that would move), by destination ``queue``.
        tiers: The same messages by tier (``"-"``: tasks no tier names).
        recovered: Messages a previous, interrupted run had in flight, published now.
        left: Messages left in the source because ``tiers``, ``limit`` or the queue they
            are already in said so, by reason.
        unplaceable: Messages left in the source because they cannot be routed (not a
            Celery task message, or a task the app does not have), by reason.
        seconds: How long it took.
    """

    source: str
    destination: str
    dry_run: bool
    moved: Mapping[str, int]
    tiers: Mapping[str, int]
    recovered: int
    left: Mapping[str, int]
    unplaceable: Mapping[str, int]
    seconds: float

    @property
    def total(self) -> int:
        """How many messages moved (or would)."""
        return sum(self.moved.values())

    def as_dict(self) -> dict[str, Any]:
        """The migration as JSON-ready data."""
        return {**attrs.asdict(self), "total": self.total}


@attrs.frozen
class _Message:
    """A task message as both brokers can carry it."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str
    content_encoding: str
    #: Where the source keeps it: the kombu message, or the Redis list and payload.
    token: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def task(self) -> str | None:
        name = self.headers.get("task")
        return name if isinstance(name, str) else None


def _from_redis(payload: bytes, key: str) -> _Message:
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if not isinstance(data, dict):  # not kombu's format: no task, so it stays where it is
        return _Message(payload, {}, {}, "application/octet-stream", "binary", (key, payload))
    properties = data.get("properties") or {}
    body = data.get("body") or ""
    if properties.get("body_encoding") == "base64":
        raw = base64.b64decode(body)
    else:
        raw = body.encode() if isinstance(body, str) else bytes(body)
    return _Message(
        raw,
        dict(data.get("headers") or {}),
        dict(properties),
        data.get("content-type") or "application/json",
        data.get("content-encoding") or "utf-8",
        (key, payload),
    )


@attrs.frozen
class _Skip:
    """Why a message stays in the source; *placeable*: it could move, but was not asked to."""

    reason: str
    placeable: bool


class _Router:
    """Where the app's routing sends each message on the destination broker."""

    def __init__(self, app: Celery, tiers: Collection[str] | None) -> None:
        from ._configure import configured_registry, learn_task_names

        registry = configured_registry(app)
        if registry is None:
            raise MigrationError(
                f"app {app.main!r} is not configured by prioroute: call "
                "prioroute.configure(app) in the module that defines it"
            )
        unknown = sorted(set(tiers or ()) - set(registry.tiers))
        if unknown:
            raise MigrationError(
                f"unknown tier(s) {', '.join(map(repr, unknown))}; the app's tiers are "
                f"{', '.join(map(repr, registry.tiers))}"
            )
        self.app = app
        self.registry = registry
        self.tasks = learn_task_names(app, registry)
        self.tiers = None if tiers is None else frozenset(tiers)

    def place(self, message: _Message) -> tuple[str, Queue, int | None] | _Skip:
        """(tier, queue, priority), or why the message stays in the source."""
        name = message.task
        if name is None:
            return _Skip("not a Celery task message (no 'task' header)", placeable=False)
        if name not in self.tasks:
            return _Skip(f"no task {name!r} in app {self.app.main!r}", placeable=False)
        if not _decodes(message):
            return _Skip(f"its {message.content_type} body does not decode", placeable=False)
        registration = self.registry.lookup(name)
        tier = registration.tier if registration is not None else "-"
        if self.tiers is not None and tier not in self.tiers:
            return _Skip(f"tier {tier!r} not selected", placeable=True)
        route = self.app.amqp.router.route({}, name)
        queue: Queue = route["queue"]
        return tier, queue, route.get("priority")


def _decodes(message: _Message) -> bool:
    """Whether a worker could decode the body: JSON is checked, other types trusted."""
    if message.content_type != "application/json":
        return True
    try:
        json.loads(message.body.decode(message.content_encoding or "utf-8"))
    except (ValueError, LookupError):
        return False
    return True


def _publish(producer: Any, message: _Message, queue: Queue, priority: int | None) -> None:
    producer.publish(
        message.body,
        exchange=queue.exchange,
        routing_key=queue.routing_key,
        headers=message.headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        priority=priority,
        correlation_id=message.properties.get("correlation_id"),
        reply_to=message.properties.get("reply_to"),
        delivery_mode=2,
        declare=[queue],
        retry=True,
        retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1},
    )


@contextmanager
def _connection(app: Celery, url: str, what: str, timeout: float) -> Iterator[Connection]:
    try:
        connection = _connect(app, timeout, url=url, what=f"{what} broker".strip())
    except BrokerUnreachable as exc:
        raise MigrationError(str(exc)) from None
    try:
        yield connection
    finally:
        connection.release()


def _default_queues(app: Celery) -> list[str]:
    names = list(app.amqp.queues)
    return [*names, *(["celery"] if "celery" not in names else [])]


Progress = Callable[[int], None]


def migrate(
    app: Celery,
    source: str,
    *,
    destination: str | None = None,
    tiers: Collection[str] | None = None,
    queues: Collection[str] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    timeout: float = 5.0,
) -> Migration:
    """Move the tasks waiting in *source*'s queues to where *app*'s routing sends them.

    *app* must be configured by prioroute for the destination broker — *destination*, or
    its own ``broker_url`` — so that each task gets the queue and the priority that
    broker serves first. Messages of tiers not in *tiers*, of tasks the app does not
    have, or that are not Celery task messages stay in the source and are counted.

    Args:
        queues: The source queues to drain; default: every queue the app uses, and
            Celery's default ``celery``.
        limit: Move at most this many messages.
        dry_run: Count what would move, and where, touching nothing.
        progress: Called with the number moved so far after each message.

    Raises:
        MigrationError: The app is not configured by prioroute, a tier is unknown, or a
            broker cannot be reached.
    """
    started = time.monotonic()
    router = _Router(app, tiers)
    target = destination or app.conf.broker_url
    configured_for = Connection(app.conf.broker_url).transport.driver_type
    if Connection(target).transport.driver_type != configured_for:
        raise MigrationError(
            f"app {app.main!r} is configured for its broker_url "
            f"{maybe_sanitize_url(app.conf.broker_url)} ({configured_for}), not for the "
            f"destination {maybe_sanitize_url(target)}: priorities differ between brokers, so "
            "point the app's broker_url at the destination and run again"
        )
    names = list(queues) if queues else _default_queues(app)
    moved: Counter[str] = Counter()
    by_tier: Counter[str] = Counter()
    left: Counter[str] = Counter()
    unplaceable: Counter[str] = Counter()
    recovered = 0
    same_broker = _same(source, target)
    with (
        _connection(app, source, "source", timeout) as src,
        _connection(app, target, "destination", timeout) as dst,
    ):
        producer = dst.Producer()
        reader: _Source = (
            _RedisSource(src) if src.transport.driver_type == "redis" else _AmqpSource(src)
        )
        if not dry_run:
            for message in reader.recover():
                placed = router.place(message)
                if isinstance(placed, _Skip):  # the app changed since: keep it in flight
                    unplaceable[f"in flight: {placed.reason}"] += 1
                    continue
                _publish(producer, message, placed[1], placed[2])
                reader.done(message)
                recovered += 1
        for name in names:
            for message in reader.messages(name):
                placed = router.place(message)
                if isinstance(placed, _Skip):
                    (left if placed.placeable else unplaceable)[placed.reason] += 1
                    continue
                tier, queue, priority = placed
                if same_broker and queue.name == name:
                    left[f"already in its queue {name!r}"] += 1
                    continue
                if limit is not None and moved.total() >= limit:
                    left["over the limit"] += 1
                    continue
                if not dry_run:
                    if not reader.take(message):
                        continue  # a worker took it meanwhile
                    _publish(producer, message, queue, priority)
                    reader.done(message)
                moved[queue.name] += 1
                by_tier[tier] += 1
                if progress is not None:
                    progress(moved.total())
    return Migration(
        source=maybe_sanitize_url(source),
        destination=maybe_sanitize_url(target),
        dry_run=dry_run,
        moved=dict(moved),
        tiers=dict(by_tier),
        recovered=recovered,
        left=dict(left),
        unplaceable=dict(unplaceable),
        seconds=round(time.monotonic() - started, 3),
    )


def _same(a: str, b: str) -> bool:
    return maybe_sanitize_url(a).rstrip("/") == maybe_sanitize_url(b).rstrip("/")


class _Source:
    def recover(self) -> Iterator[_Message]:
        return iter(())

    def messages(self, name: str) -> Iterator[_Message]:
        raise NotImplementedError

    def take(self, message: _Message) -> bool:
        return True

    def done(self, message: _Message) -> None:
        raise NotImplementedError


class _AmqpSource(_Source):
    """RabbitMQ: take each message unacknowledged; acknowledge it once it is published.

    Messages left behind stay unacknowledged until the connection closes, when the broker
    puts them back: the loop sees each message once.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def messages(self, name: str) -> Iterator[_Message]:
        for raw in waiting_messages(self.connection, Queue(name, no_declare=True)):
            yield _Message(
                raw.body if isinstance(raw.body, bytes) else str(raw.body).encode(),
                dict(raw.headers or {}),
                dict(raw.properties or {}),
                raw.content_type or "application/json",
                raw.content_encoding or "utf-8",
                raw,
            )

    def done(self, message: _Message) -> None:
        message.token.ack()


class _RedisSource(_Source):
    """Redis: each priority step's list, oldest message first.

    A message to move is taken out of its list and pushed onto :data:`INFLIGHT` in one
    transaction, published, and then removed from there; the next run publishes whatever
    an interrupted run left in flight.
    """

    def __init__(self, connection: Connection) -> None:
        self.client = connection.default_channel.client  # type: ignore[attr-defined]

    def recover(self) -> Iterator[_Message]:
        for payload in reversed(self.client.lrange(INFLIGHT, 0, -1)):
            yield _from_redis(payload, INFLIGHT)

    def messages(self, name: str) -> Iterator[_Message]:
        for step in _REDIS_STEPS:
            key = name if step == 0 else f"{name}{REDIS_SEP}{step}"
            # kombu pushes on the left and pops on the right: the oldest is last.
            for payload in reversed(self.client.lrange(key, 0, -1)):
                yield _from_redis(payload, key)

    def take(self, message: _Message) -> bool:
        key, payload = message.token
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(key, -1, payload)
            pipe.lpush(INFLIGHT, payload)
            removed, _ = pipe.execute()
        if not removed:  # a worker took it meanwhile
            self.client.lrem(INFLIGHT, 1, payload)
            return False
        return True

    def done(self, message: _Message) -> None:
        _, payload = message.token
        self.client.lrem(INFLIGHT, -1, payload)


def recreate_queue(app: Celery, name: str, *, timeout: float = 5.0) -> Migration:
    """Recreate RabbitMQ queue *name* with the arguments prioroute declares for it, keeping
    every message: drain it into a holding queue, delete it, declare it again, and move
    the messages back through the app's routing. A rerun after a crash continues.

    Raises:
        MigrationError: Not RabbitMQ, the queue is not one of the app's, or the broker
            cannot be reached.
    """
    declared = app.amqp.queues.get(name)
    if declared is None:
        raise MigrationError(
            f"queue {name!r} is not one of app {app.main!r}'s queues "
            f"({', '.join(map(repr, app.amqp.queues)) or 'none'}); give one of those"
        )
    url = app.conf.broker_url
    holding = Queue(
        f"{name}.prioroute-recreate",
        Exchange(""),
        routing_key=f"{name}.prioroute-recreate",
        durable=True,
    )
    if Connection(url).transport.driver_type != "amqp":
        raise MigrationError(
            f"only RabbitMQ queues have arguments to change; {maybe_sanitize_url(url)} is "
            "not RabbitMQ"
        )
    with _connection(app, url, "", timeout) as connection:
        producer = connection.Producer()
        holding.bind(connection.default_channel).declare()
        source = _AmqpSource(connection)
        for message in source.messages(name):  # 1. drain into the holding queue, as is
            _publish(producer, message, holding, message.properties.get("priority"))
            source.done(message)
        channel: Any = connection.channel()
        # 2. delete, only if empty: a message published meanwhile stops us. An earlier
        # run may have deleted it already.
        with suppress(*connection.channel_errors):
            channel.queue_delete(name, if_empty=True)
        declared.bind(connection.channel()).declare()  # 3. declare prioroute's
    result = migrate(app, url, queues=[holding.name], timeout=timeout)  # 4. back, routed
    with _connection(app, url, "", timeout) as connection:
        channel = connection.channel()
        with suppress(*connection.channel_errors):
            channel.queue_delete(holding.name, if_empty=True)
    return result
