"""The builder: a pure function from a registry and a broker profile to Celery settings."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
from kombu import Queue

from ._errors import PriorouteError
from ._profiles import BrokerProfile, profile_for
from ._registry import Registration, Registry
from ._tiers import Tier, check_queue_name

__all__ = ["DEFAULT_QUEUE", "REASONS", "Layout", "Settings", "build"]

#: The shared priority queue's name unless you choose another. A fresh name, so that it
#: never collides with an existing ``celery`` queue declared without ``x-max-priority``.
DEFAULT_QUEUE = "prioroute"

#: Why prioroute emits each setting; used in docs and in conflict messages.
REASONS: Mapping[str, str] = MappingProxyType(
    {
        "task_routes": "sends each registered task to its tier's queue with its tier's priority",
        "task_queues": "declares every queue prioroute routes to with x-max-priority",
        "task_annotations": "gives each registered task its tier's retry, time-limit and ack policy",
        "task_default_queue": "sends unregistered tasks to the shared priority queue",
        "task_default_exchange": "keeps the default exchange the shared queue's own",
        "task_default_routing_key": "keeps the default routing key the shared queue's own",
        "task_queue_max_priority": "gives queues Celery creates on the fly priorities too",
        "task_inherit_parent_priority": "keeps a chain's or chord's children at their parent's priority",
        "task_acks_late": "acknowledges a task after it ran, so a dying worker's task is redelivered",
        "task_reject_on_worker_lost": "requeues a task whose worker process was killed instead of losing it",
        "worker_prefetch_multiplier": "stops a worker reserving low tasks that a critical task then waits behind",
        "task_serializer": "publishes JSON, which every worker can read and nobody can inject code into",
        "result_serializer": "stores results as JSON",
        "accept_content": "refuses pickle and other content types a worker should not execute",
        "broker_transport_options": "turns on publisher confirms so a published task is never silently lost",
    }
)


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Settings:
    """Exactly the Celery settings prioroute applies, as a value.

    Each attribute is the Celery setting of the same name. :meth:`as_dict` gives them as a
    mapping ready for ``app.conf.update()``; :func:`prioroute.configure` applies them and
    merges them with what the app already has.

    Not emitted on purpose: ``task_default_priority`` (Celery copies it into every task,
    where it beats the route's priority at publish time) and any ``queue``/``priority`` task
    attribute.
    """

    task_routes: Mapping[str, Mapping[str, Any]] = attrs.field(converter=_frozen_map)
    task_queues: tuple[Queue, ...]
    task_annotations: Mapping[str, Mapping[str, Any]] = attrs.field(converter=_frozen_map)
    task_default_queue: str
    task_default_exchange: str
    task_default_routing_key: str
    task_queue_max_priority: int
    task_inherit_parent_priority: bool
    task_acks_late: bool
    task_reject_on_worker_lost: bool
    worker_prefetch_multiplier: int
    task_serializer: str
    result_serializer: str
    accept_content: tuple[str, ...]
    broker_transport_options: Mapping[str, Any] = attrs.field(converter=_frozen_map)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a fresh ``dict`` of plain Celery values."""
        return {
            "task_routes": {name: dict(route) for name, route in self.task_routes.items()},
            "task_queues": self.task_queues,
            "task_annotations": {n: dict(a) for n, a in self.task_annotations.items()},
            "task_default_queue": self.task_default_queue,
            "task_default_exchange": self.task_default_exchange,
            "task_default_routing_key": self.task_default_routing_key,
            "task_queue_max_priority": self.task_queue_max_priority,
            "task_inherit_parent_priority": self.task_inherit_parent_priority,
            "task_acks_late": self.task_acks_late,
            "task_reject_on_worker_lost": self.task_reject_on_worker_lost,
            "worker_prefetch_multiplier": self.worker_prefetch_multiplier,
            "task_serializer": self.task_serializer,
            "result_serializer": self.result_serializer,
            "accept_content": list(self.accept_content),
            "broker_transport_options": dict(self.broker_transport_options),
        }


@attrs.frozen
class Layout:
    """How one registry's tiers are laid out on one broker: queues and priorities.

    The per-task part of :func:`build`, shared with the router that
    :func:`~prioroute.configure` installs for tasks registered later.
    """

    profile: BrokerProfile
    tiers: Mapping[str, Tier]
    shared_queue: str
    priorities: Mapping[str, int]

    @classmethod
    def of(cls, registry: Registry, profile: BrokerProfile, shared_queue: str) -> Layout:
        """The layout of *registry*'s tiers on *profile*, around *shared_queue*."""
        check_queue_name(shared_queue, what="the shared queue")
        tiers = dict(registry.tiers)
        return cls(profile, MappingProxyType(tiers), shared_queue, profile.priorities(tiers))

    def queue_name(self, registration: Registration) -> str:
        """The queue *registration*'s task goes to."""
        return registration.queue or self.tiers[registration.tier].queue or self.shared_queue

    def route(self, registration: Registration) -> dict[str, Any]:
        """The ``task_routes`` entry for *registration*."""
        return {
            "queue": self.queue_name(registration),
            "priority": self.priorities[registration.tier],
        }

    def annotation(self, registration: Registration) -> dict[str, Any]:
        """The ``task_annotations`` entry for *registration*: its tier's policy."""
        return self.tiers[registration.tier].task_options()

    def declare(self, name: str) -> Queue:
        """The kombu queue declaration for the queue called *name*."""
        return self.profile.declare(name, self.tiers)


def build(
    registry: Registry,
    *,
    broker: str | BrokerProfile = "rabbitmq",
    queue: str = DEFAULT_QUEUE,
) -> Settings:
    """Compute the Celery settings for *registry* on *broker*. A pure function.

    Args:
        registry: The tasks and their tiers.
        broker: A :class:`BrokerProfile` or a profile name (``"rabbitmq"``).
        queue: The shared priority queue's name.

    >>> from prioroute import Registry
    >>> registry = Registry()
    >>> registry.register("ops.deploy", "critical")
    >>> build(registry).task_routes["ops.deploy"]
    mappingproxy({'queue': 'prioroute', 'priority': 2})
    """
    if not isinstance(registry, Registry):
        raise PriorouteError(f"build() takes a prioroute.Registry, got {registry!r}")
    layout = Layout.of(registry, profile_for(broker), queue)
    registrations = registry.registrations()
    queue_names = [queue, *sorted(registry.lanes() - {queue})]
    return Settings(
        task_routes={r.task: layout.route(r) for r in registrations},
        task_queues=tuple(layout.declare(name) for name in queue_names),
        task_annotations={r.task: layout.annotation(r) for r in registrations},
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_queue_max_priority=layout.profile.max_priority(layout.tiers),
        task_inherit_parent_priority=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=("json",),
        broker_transport_options=layout.profile.settings()["broker_transport_options"],
    )
