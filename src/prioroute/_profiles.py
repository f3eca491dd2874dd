"""Broker profiles: what "priority" means on each broker, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from kombu import Exchange, Queue

from ._errors import PriorouteError
from ._tiers import Tier

__all__ = ["RABBITMQ", "BrokerProfile", "profile_for"]


def urgency_ranks(tiers: Mapping[str, Tier]) -> dict[str, int]:
    """Each tier's rank among the distinct urgencies: 0 for the least urgent."""
    levels = sorted({tier.urgency for tier in tiers.values()})
    return {name: levels.index(tier.urgency) for name, tier in tiers.items()}


@attrs.frozen
class BrokerProfile:
    """How tiers become queues and message priorities on one kind of broker.

    Attributes:
        name: The profile's name, as ``configure(app, broker=...)`` takes it.
        schemes: The broker URL schemes this profile is chosen for.
        description: One line for people.
    """

    name: str
    schemes: frozenset[str]
    description: str

    def priorities(self, tiers: Mapping[str, Tier]) -> dict[str, int]:
        """The message priority each tier's tasks are published with.

        RabbitMQ serves the highest number first; tiers map onto ``0 .. levels-1`` in
        urgency order. Messages published without a priority count as 0 there, the same
        as the least urgent tier.
        """
        return urgency_ranks(tiers)

    def max_priority(self, tiers: Mapping[str, Tier]) -> int:
        """The ``x-max-priority`` every queue is declared with (1 at least)."""
        return max(1, *self.priorities(tiers).values())

    def declare(self, name: str, tiers: Mapping[str, Tier]) -> Queue:
        """The kombu queue for *name*: durable, on a direct exchange of the same name."""
        return Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            max_priority=self.max_priority(tiers),
        )

    def settings(self) -> dict[str, Any]:
        """Broker-specific Celery settings."""
        # Publisher confirms: apply_async returns only once the broker has the message.
        return {"broker_transport_options": {"confirm_publish": True}}


#: RabbitMQ classic queues with ``x-max-priority``.
RABBITMQ = BrokerProfile(
    name="rabbitmq",
    schemes=frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"}),
    description="RabbitMQ classic queues with x-max-priority (higher number = sooner)",
)

_PROFILES = {RABBITMQ.name: RABBITMQ}


def profile_for(broker: str | BrokerProfile | None, broker_url: str | None = None) -> BrokerProfile:
    """The profile named *broker*, or the one for *broker_url*'s scheme.

    ``memory://`` (kombu's in-process transport, for tests) is served by the RabbitMQ
    profile.
    """
    if isinstance(broker, BrokerProfile):
        return broker
    if broker is not None:
        try:
            return _PROFILES[broker]
        except KeyError:
            raise PriorouteError(
                f"unknown broker profile {broker!r}; known profiles: {', '.join(sorted(_PROFILES))}"
            ) from None
    url = (broker_url or "amqp://").split(";")[0]
    scheme = urlsplit(url).scheme.split("+")[0] or url.split(":")[0]
    if scheme == "memory":
        return RABBITMQ
    for profile in _PROFILES.values():
        if scheme in profile.schemes:
            return profile
    known = sorted(s for p in _PROFILES.values() for s in p.schemes)
    raise PriorouteError(
        f"broker URL scheme {scheme!r} has no prioroute profile; prioroute supports "
        f"{', '.join(s + '://' for s in known)} (and memory:// for tests); "
        "pass configure(app, broker='rabbitmq') if your transport speaks AMQP"
    )
