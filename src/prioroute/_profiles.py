"""Broker profiles: what "priority" means on each broker, in one place.

A profile turns the tiers' urgency *order* into what one kind of broker understands:

========================  =====================  ==============================================
profile                   message priority       queues
========================  =====================  ==============================================
``rabbitmq``              higher number sooner   classic, ``x-max-priority``
``rabbitmq-quorum``       none (RabbitMQ 3.x)    quorum, ``x-delivery-limit`` + dead letters
``rabbitmq4-quorum``      two levels (0, 5)      quorum, ``x-delivery-limit`` + dead letters
``redis``                 lower number sooner    one list per ``priority_steps`` step
``sqs``                   none                   one queue per lane, ``visibility_timeout``
``no-priority``           none                   one queue per lane
========================  =====================  ==============================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
from kombu import Exchange, Queue

from ._errors import PriorouteError
from ._tiers import Tier

__all__ = [
    "NO_PRIORITY",
    "PROFILES",
    "RABBITMQ",
    "RABBITMQ4_QUORUM",
    "RABBITMQ_QUORUM",
    "REDIS",
    "SQS",
    "BrokerProfile",
    "profile_for",
]

#: The separator kombu's Redis transport puts between a queue's name and its priority
#: step; written out so that producers and workers can never disagree about it.
REDIS_SEP = "\x06\x16"
#: kombu's default visibility timeout on Redis and SQS, in seconds.
DEFAULT_VISIBILITY_TIMEOUT = 3600
#: RabbitMQ 4 quorum queues serve priorities 5 and above before 0-4.
QUORUM_HIGH_PRIORITY = 5


def urgency_ranks(tiers: Mapping[str, Tier]) -> dict[str, int]:
    """Each tier's rank among the distinct urgencies: 0 for the least urgent."""
    levels = sorted({tier.urgency for tier in tiers.values()})
    return {name: levels.index(tier.urgency) for name, tier in tiers.items()}


def longest_wait(tiers: Mapping[str, Tier]) -> float:
    """The longest time any tier keeps a message unacknowledged: its longest retry delay or
    time limit, in seconds (0 if no tier sets either)."""
    return max(
        max(
            tier.retry.backoff_max if tier.retry.backoff else tier.retry.delay,
            tier.time_limit or 0.0,
            tier.soft_time_limit or 0.0,
        )
        for tier in tiers.values()
    )


def dead_letter_queue(name: str, *, quorum: bool = False) -> Queue:
    """The dead-letter queue of queue *name*: ``<name>.dead``, on its own direct exchange.

    No worker consumes it: poison messages wait there for a person
    (``prioroute dead``) to look at them and requeue or drop them.
    """
    dead = f"{name}.dead"
    return Queue(
        dead,
        Exchange(dead, type="direct", durable=True),
        routing_key=dead,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"} if quorum else None,
    )


class _DeadLetteredQueue(Queue):
    """A kombu queue that declares its dead-letter exchange and queue before itself.

    The dead-letter queue is not in ``task_queues``, so no worker consumes it: poison
    messages wait there for a person to look at them.
    """

    attrs = (*Queue.attrs, ("dead_letter", None))
    dead_letter: Queue | None = None
    no_declare: bool | None

    def declare(self, nowait: bool = False, channel: Any = None) -> str:
        if not self.no_declare and self.dead_letter is not None:
            self.dead_letter.bind(channel or self.channel).declare(nowait=nowait)
        return str(super().declare(nowait=nowait, channel=channel))


@attrs.frozen
class BrokerProfile:
    """How tiers become queues and message priorities on one kind of broker.

    Attributes:
        name: The profile's name, as ``configure(app, broker=...)`` takes it.
        schemes: The broker URL schemes this profile is chosen for.
        description: One line for people.
        priority: ``"higher-first"`` (RabbitMQ), ``"lower-first"`` (Redis) or ``None``
            when the broker has no message priority and only separate queues (lanes)
            with their own workers keep tiers apart.
        levels: How many priority levels the broker tells apart.
        queue_type: ``"classic"`` or ``"quorum"`` (RabbitMQ).
        delivery_limit: Quorum queues: deliveries before a message is dead-lettered.
        visibility_timeout: Whether the transport redelivers unacknowledged messages
            after a timeout (Redis, SQS), which must outlast every retry delay.
        confirm_publish: Turn on publisher confirms (py-amqp).
    """

    name: str
    schemes: frozenset[str]
    description: str
    priority: Literal["higher-first", "lower-first"] | None
    levels: int = 10
    queue_type: Literal["classic", "quorum"] = "classic"
    delivery_limit: int | None = None
    visibility_timeout: bool = False
    confirm_publish: bool = False

    @property
    def supports_priority(self) -> bool:
        """Whether one queue can serve several tiers in urgency order."""
        return self.priority is not None

    @property
    def exchange_type(self) -> str:
        """``"topic"`` for quorum queues (Celery's native delayed delivery needs it for
        countdowns and retries), ``"direct"`` otherwise."""
        return "topic" if self.queue_type == "quorum" else "direct"

    @property
    def default_topology(self) -> Literal["shared", "lanes"]:
        """``"shared"`` where the broker has priorities, ``"lanes"`` where it has none."""
        return "shared" if self.supports_priority else "lanes"

    def priorities(self, tiers: Mapping[str, Tier]) -> dict[str, int] | None:
        """The message priority each tier's tasks are published with; ``None`` if none.

        Only the order of urgencies matters. RabbitMQ classic: ranks ``0 .. k-1``, higher
        sooner (a message without priority counts as 0, like the least urgent tier).
        Redis: ``k-1 .. 0``, lower sooner, one ``priority_steps`` step each. RabbitMQ 4
        quorum: 5 for the most urgent tiers, 0 for the rest.
        """
        ranks = urgency_ranks(tiers)
        top = max(ranks.values())
        if self.priority is None:
            return None
        if self.priority == "lower-first":
            return {name: top - rank for name, rank in ranks.items()}
        if self.levels == 2:
            return {
                name: QUORUM_HIGH_PRIORITY if rank == top and top > 0 else 0
                for name, rank in ranks.items()
            }
        return ranks

    def unregistered_priority(self, tiers: Mapping[str, Tier]) -> int | None:
        """The priority of tasks no tier names: the least urgent tier's.

        It matters on Redis, where a message without priority counts as 0, the *most*
        urgent step.
        """
        priorities = self.priorities(tiers)
        if priorities is None:
            return None
        ranks = urgency_ranks(tiers)
        return next(priorities[name] for name, rank in ranks.items() if rank == 0)

    def max_priority(self, tiers: Mapping[str, Tier]) -> int | None:
        """The ``x-max-priority`` classic RabbitMQ queues are declared with, else ``None``."""
        if self.priority != "higher-first" or self.queue_type != "classic":
            return None
        priorities = self.priorities(tiers) or {}
        return max(1, *priorities.values())

    def collapsed(self, tiers: Mapping[str, Tier]) -> list[str]:
        """Notes on tiers of different urgency that this broker cannot tell apart."""
        priorities = self.priorities(tiers)
        if priorities is None:
            return []
        by_priority: dict[int, set[int]] = {}
        for name, priority in priorities.items():
            by_priority.setdefault(priority, set()).add(tiers[name].urgency)
        notes = []
        for priority, urgencies in sorted(by_priority.items()):
            if len(urgencies) > 1:
                names = sorted(n for n, p in priorities.items() if p == priority)
                notes.append(
                    f"{self.name}: tiers {', '.join(map(repr, names))} have different urgencies "
                    f"but share priority {priority} (the broker has {self.levels} levels); "
                    "give them their own lanes (Tier(queue=...) or topology='lanes') to keep "
                    "them apart"
                )
        return notes

    def declare(self, name: str, tiers: Mapping[str, Tier]) -> Queue:
        """The kombu queue for *name*, durable, on an exchange of the same name."""
        exchange = Exchange(name, type=self.exchange_type, durable=True)
        if self.queue_type == "quorum":
            dead_letter = dead_letter_queue(name, quorum=True)
            arguments: dict[str, Any] = {
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": dead_letter.name,
                "x-dead-letter-routing-key": dead_letter.name,
            }
            if self.delivery_limit is not None:
                arguments["x-delivery-limit"] = self.delivery_limit
            return _DeadLetteredQueue(
                name,
                exchange,
                routing_key=name,
                durable=True,
                queue_arguments=arguments,
                dead_letter=dead_letter,
            )
        return Queue(
            name,
            exchange,
            routing_key=name,
            durable=True,
            max_priority=self.max_priority(tiers),
        )

    def visibility_timeout_for(self, tiers: Mapping[str, Tier]) -> int | None:
        """The ``visibility_timeout`` to use: kombu's default (1 h) or twice the longest
        retry delay or time limit of any tier, whichever is longer; ``None`` if the
        transport has none."""
        if not self.visibility_timeout:
            return None
        return max(DEFAULT_VISIBILITY_TIMEOUT, math.ceil(2 * longest_wait(tiers)))

    def minimum_visibility_timeout(self, tiers: Mapping[str, Tier]) -> int | None:
        """The shortest ``visibility_timeout`` an app may set itself: twice the longest
        retry delay or time limit when every tier has a time limit; otherwise a task may
        run for any time, and only :meth:`visibility_timeout_for` will do. ``None`` if the
        transport has none."""
        if not self.visibility_timeout:
            return None
        if all(tier.time_limit is not None for tier in tiers.values()):
            return max(1, math.ceil(2 * longest_wait(tiers)))
        return self.visibility_timeout_for(tiers)

    def transport_options(self, tiers: Mapping[str, Tier]) -> dict[str, Any]:
        """The ``broker_transport_options`` this broker needs for *tiers*."""
        options: dict[str, Any] = {}
        if self.confirm_publish:
            # apply_async returns only once the broker has the message.
            options["confirm_publish"] = True
        if self.priority == "lower-first":
            priorities = self.priorities(tiers) or {}
            options["priority_steps"] = list(range(max(priorities.values()) + 1))
            options["sep"] = REDIS_SEP
            options["queue_order_strategy"] = "priority"
            # Look for a dead worker's unacknowledged tasks every unacked_restore_interval
            # (10 s), not every tenth one: with a short visibility_timeout they come back
            # in seconds, not in a minute and a half.
            options["unacked_restore_throttle"] = 1
        timeout = self.visibility_timeout_for(tiers)
        if timeout is not None:
            options["visibility_timeout"] = timeout
        return options


_AMQP = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})

#: RabbitMQ classic queues with ``x-max-priority``.
RABBITMQ = BrokerProfile(
    name="rabbitmq",
    schemes=_AMQP,
    description="RabbitMQ classic queues with x-max-priority (higher number = sooner)",
    priority="higher-first",
    confirm_publish=True,
)

#: RabbitMQ 3.x quorum queues: replicated, no priorities, so lanes only.
RABBITMQ_QUORUM = BrokerProfile(
    name="rabbitmq-quorum",
    schemes=frozenset(),
    description=(
        "RabbitMQ 3.x quorum queues: no message priority, one lane per tier, "
        "x-delivery-limit with a dead-letter queue per lane"
    ),
    priority=None,
    levels=1,
    queue_type="quorum",
    delivery_limit=5,
    confirm_publish=True,
)

#: RabbitMQ 4.x quorum queues: two priority levels.
RABBITMQ4_QUORUM = attrs.evolve(
    RABBITMQ_QUORUM,
    name="rabbitmq4-quorum",
    description=(
        "RabbitMQ 4.x quorum queues: two priority levels (5+ before 0-4), "
        "x-delivery-limit with a dead-letter queue per lane"
    ),
    priority="higher-first",
    levels=2,
)

#: Redis: priority emulated with one list per step, lower number sooner.
REDIS = BrokerProfile(
    name="redis",
    schemes=frozenset({"redis", "rediss", "sentinel", "redis+socket"}),
    description="Redis lists per priority step (lower number = sooner), strict queue order",
    priority="lower-first",
    visibility_timeout=True,
)

#: Amazon SQS: no priority; lanes with their own workers.
SQS = BrokerProfile(
    name="sqs",
    schemes=frozenset({"sqs", "https+sqs"}),
    description="Amazon SQS: no message priority, one lane per tier, visibility_timeout",
    priority=None,
    levels=1,
    visibility_timeout=True,
)

#: Any other transport: no priority is relied on; lanes with their own workers.
NO_PRIORITY = BrokerProfile(
    name="no-priority",
    schemes=frozenset(
        {
            "filesystem",
            "sqla",
            "sqlalchemy",
            "mongodb",
            "zookeeper",
            "consul",
            "etcd",
            "azureservicebus",
            "azurestoragequeues",
            "gcpubsub",
            "confluentkafka",
            "qpid",
            "pyro",
            "couchdb",
        }
    ),
    description="a transport without (reliable) message priority: one lane per tier",
    priority=None,
    levels=1,
)

#: Every profile by name.
PROFILES: Mapping[str, BrokerProfile] = {
    p.name: p for p in (RABBITMQ, RABBITMQ_QUORUM, RABBITMQ4_QUORUM, REDIS, SQS, NO_PRIORITY)
}


def scheme_of(broker_url: str | None) -> str:
    """The transport scheme of a Celery broker URL (the first of a failover list)."""
    url = (broker_url or "amqp://").split(";")[0].strip()
    scheme = urlsplit(url).scheme or url.split(":")[0]
    return scheme.lower()


def profile_for(broker: str | BrokerProfile | None, broker_url: str | None = None) -> BrokerProfile:
    """The profile named *broker*, or the one for *broker_url*'s scheme.

    ``memory://`` (kombu's in-process transport, for tests) gets the RabbitMQ profile, so
    a test app is configured like the production one; pass ``broker=`` to test another.
    """
    if isinstance(broker, BrokerProfile):
        return broker
    if broker is not None:
        try:
            return PROFILES[broker]
        except KeyError:
            raise PriorouteError(
                f"unknown broker profile {broker!r}; known profiles: {', '.join(PROFILES)}"
            ) from None
    scheme = scheme_of(broker_url)
    if scheme == "memory":
        return RABBITMQ
    for candidate in (scheme, scheme.split("+")[0]):  # sqla+postgresql:// is sqla
        for profile in PROFILES.values():
            if candidate in profile.schemes:
                return profile
    known = sorted(s for p in PROFILES.values() for s in p.schemes)
    raise PriorouteError(
        f"broker URL scheme {scheme!r} has no prioroute profile; known schemes: "
        f"{', '.join(s + '://' for s in known)} (and memory:// for tests); "
        f"name the profile with configure(app, broker=...), one of {', '.join(PROFILES)}"
    )
