"""The builder: a pure function from a registry and a broker profile to Celery settings."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
from kombu import Queue

from ._errors import PriorouteError, TopologyError
from ._profiles import BrokerProfile, profile_for
from ._registry import Registration, Registry
from ._tiers import Tier, check_queue_name

__all__ = ["DEFAULT_QUEUE", "REASONS", "TOPOLOGIES", "Layout", "Settings", "build"]

#: The queue layouts prioroute builds: one priority queue for every tier, or one queue per tier.
TOPOLOGIES = ("shared", "lanes")

#: The shared priority queue's name unless you choose another. A fresh name, so that it
#: never collides with an existing ``celery`` queue declared without ``x-max-priority``.
DEFAULT_QUEUE = "prioroute"
#: The Celery request class that counts a message's deliveries when its worker dies.
GUARDED_REQUEST = "prioroute._guard:GuardedRequest"

#: Why prioroute emits each setting; used in docs and in conflict messages.
REASONS: Mapping[str, str] = MappingProxyType(
    {
        "task_routes": "sends each registered task to its tier's queue with its tier's priority",
        "task_queues": "declares every queue prioroute routes to with x-max-priority",
        "task_annotations": "gives each registered task its tier's retry, time-limit and ack policy",
        "task_default_queue": "sends unregistered tasks to the shared priority queue",
        "task_default_exchange": "keeps the default exchange the shared queue's own",
        "task_default_routing_key": "keeps the default routing key the shared queue's own",
        "task_default_exchange_type": "keeps the default exchange's type the shared queue's own",
        "task_queue_max_priority": "gives queues Celery creates on the fly priorities too",
        "task_default_queue_type": "makes queues Celery creates on the fly the broker profile's type",
        "task_inherit_parent_priority": "keeps a chain's or chord's children at their parent's priority",
        "task_acks_late": "acknowledges a task after it ran, so a dying worker's task is redelivered",
        "task_reject_on_worker_lost": "requeues a task whose worker process was killed instead of losing it",
        "task_default_delivery_mode": "makes messages persistent, so they outlive a broker restart",
        "worker_cancel_long_running_tasks_on_connection_loss": (
            "stops a task whose worker lost the broker, which redelivers it, so it does not run twice"
        ),
        "broker_connection_retry_on_startup": (
            "keeps a worker that starts before the broker retrying instead of exiting"
        ),
        "worker_prefetch_multiplier": "stops a worker reserving low tasks that a critical task then waits behind",
        "task_serializer": "publishes JSON, which every worker can read and nobody can inject code into",
        "result_serializer": "stores results as JSON",
        "accept_content": "refuses pickle and other content types a worker should not execute",
        "broker_transport_options": (
            "sets what the broker needs for priorities and redelivery (publisher confirms on "
            "RabbitMQ; priority steps, queue order and visibility timeout on Redis)"
        ),
    }
)


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _frozen_maps(value: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    # Tasks of one tier share one frozen route and one frozen policy: keep them shared.
    return MappingProxyType(
        {
            key: inner if isinstance(inner, MappingProxyType) else _frozen_map(inner)
            for key, inner in value.items()
        }
    )


def _frozen_optional_map(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if value is None else _frozen_map(value)


@attrs.frozen
class Settings:
    """Exactly the Celery settings prioroute applies, as a value.

    Each attribute but the last two is the Celery setting of the same name. :meth:`as_dict`
    gives them as a mapping ready for ``app.conf.update()``; :func:`prioroute.configure`
    applies them and merges them with what the app already has.

    Attributes:
        default_route: The route of tasks no tier names (unregistered tasks, Celery's own
            such as ``celery.chord_unlock``, ``send_task`` to unknown names): the shared
            queue at the least urgent tier's priority. ``None`` on brokers without
            priority. :meth:`as_dict` adds it to ``task_routes`` under ``"*"``.
        notes: What this broker cannot do for these tiers, in words, e.g. tiers whose
            urgencies it cannot tell apart. Empty when nothing needs saying.

    Not emitted on purpose: ``task_default_priority`` (Celery copies it into every task,
    where it beats the route's priority at publish time) and any ``queue``/``priority`` task
    attribute.
    """

    task_routes: Mapping[str, Mapping[str, Any]] = attrs.field(converter=_frozen_maps)
    task_queues: tuple[Queue, ...]
    task_annotations: Mapping[str, Mapping[str, Any]] = attrs.field(converter=_frozen_maps)
    task_default_queue: str
    task_default_exchange: str
    task_default_routing_key: str
    task_default_exchange_type: str
    task_default_queue_type: str
    task_queue_max_priority: int | None
    task_inherit_parent_priority: bool
    task_acks_late: bool
    task_reject_on_worker_lost: bool
    task_default_delivery_mode: str
    worker_cancel_long_running_tasks_on_connection_loss: bool
    broker_connection_retry_on_startup: bool
    worker_prefetch_multiplier: int
    task_serializer: str
    result_serializer: str
    accept_content: tuple[str, ...]
    broker_transport_options: Mapping[str, Any] = attrs.field(converter=_frozen_map)
    default_route: Mapping[str, Any] | None = attrs.field(
        default=None, kw_only=True, converter=_frozen_optional_map
    )
    notes: tuple[str, ...] = attrs.field(default=(), kw_only=True)

    def as_dict(self, *, tasks: bool = True) -> dict[str, Any]:
        """The Celery settings as a fresh ``dict`` of plain values.

        ``tasks=False`` leaves out the per-task settings, ``task_routes`` and
        ``task_annotations`` (what :func:`~prioroute.configure` installs its own router
        and policy hook for).
        """
        per_task: dict[str, Any] = {}
        if tasks:
            routes = {name: dict(route) for name, route in self.task_routes.items()}
            if self.default_route is not None:
                routes["*"] = dict(self.default_route)
            per_task = {
                "task_routes": routes,
                "task_annotations": {n: dict(a) for n, a in self.task_annotations.items()},
            }
        return {
            **per_task,
            "task_queues": self.task_queues,
            "task_default_queue": self.task_default_queue,
            "task_default_exchange": self.task_default_exchange,
            "task_default_routing_key": self.task_default_routing_key,
            "task_default_exchange_type": self.task_default_exchange_type,
            "task_default_queue_type": self.task_default_queue_type,
            "task_queue_max_priority": self.task_queue_max_priority,
            "task_inherit_parent_priority": self.task_inherit_parent_priority,
            "task_acks_late": self.task_acks_late,
            "task_reject_on_worker_lost": self.task_reject_on_worker_lost,
            "task_default_delivery_mode": self.task_default_delivery_mode,
            "worker_cancel_long_running_tasks_on_connection_loss": (
                self.worker_cancel_long_running_tasks_on_connection_loss
            ),
            "broker_connection_retry_on_startup": self.broker_connection_retry_on_startup,
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

    Attributes:
        profile: The broker profile.
        tiers: The registry's tiers by name.
        shared_queue: The shared priority queue, which is also the default queue.
        topology: ``"shared"``: tiers without a ``queue`` of their own share
            *shared_queue*, served in urgency order by the broker. ``"lanes"``: each such
            tier gets its own queue, ``<shared_queue>.<tier>``, for its own workers.
        priorities: Each tier's message priority, or ``None`` if the broker has none.
    """

    profile: BrokerProfile
    tiers: Mapping[str, Tier]
    shared_queue: str
    topology: str
    priorities: Mapping[str, int] | None

    @classmethod
    def of(
        cls,
        registry: Registry,
        profile: BrokerProfile,
        shared_queue: str,
        topology: str | None = None,
    ) -> Layout:
        """The layout of *registry*'s tiers on *profile*, around *shared_queue*.

        *topology* ``None`` means the profile's default: ``"shared"`` where the broker has
        message priority, ``"lanes"`` where it has none.
        """
        check_queue_name(shared_queue, what="the shared queue")
        if topology is None:
            topology = profile.default_topology
        if topology not in TOPOLOGIES:
            raise TopologyError(
                f"unknown topology {topology!r}; use 'shared' (one priority queue for every "
                "tier) or 'lanes' (one queue per tier, each with its own workers)"
            )
        tiers = dict(registry.tiers)
        priorities = profile.priorities(tiers)
        return cls(
            profile,
            MappingProxyType(tiers),
            shared_queue,
            topology,
            None if priorities is None else MappingProxyType(priorities),
        )

    def home(self, tier: str) -> str:
        """The queue a tier's tasks go to unless a registration names another."""
        own = self.tiers[tier].queue
        if own is not None:
            return own
        return f"{self.shared_queue}.{tier}" if self.topology == "lanes" else self.shared_queue

    def queue_name(self, registration: Registration) -> str:
        """The queue *registration*'s task goes to."""
        return registration.queue or self.home(registration.tier)

    def route(self, registration: Registration) -> dict[str, Any]:
        """The ``task_routes`` entry for *registration*."""
        route: dict[str, Any] = {"queue": self.queue_name(registration)}
        if self.priorities is not None:
            route["priority"] = self.priorities[registration.tier]
        return route

    def default_route(self) -> dict[str, Any] | None:
        """The route of tasks no tier names: the shared queue, least urgent priority."""
        priority = self.profile.unregistered_priority(self.tiers)
        return None if priority is None else {"queue": self.shared_queue, "priority": priority}

    def annotation(self, registration: Registration) -> dict[str, Any]:
        """The ``task_annotations`` entry for *registration*: its tier's policy, and the
        poison-message guard where the broker does not count deliveries itself."""
        tier = self.tiers[registration.tier]
        options = tier.task_options()
        guarded = tier.acks_late and tier.reject_on_worker_lost and tier.max_deliveries
        if guarded and self.profile.delivery_limit is None:
            options["Request"] = GUARDED_REQUEST
            options["prioroute_max_deliveries"] = tier.max_deliveries
        return options

    def declare(self, name: str) -> Queue:
        """The kombu queue declaration for the queue called *name*."""
        return self.profile.declare(name, self.tiers)

    def queues(self, registry: Registry) -> dict[str, frozenset[str]]:
        """Every queue and the tiers whose tasks it holds, the most urgent queue first.

        The shared queue is always there: it is the default queue, for tasks no tier
        names. Order matters on Redis, where a worker reads its queues in this order.
        """
        held: dict[str, set[str]] = {self.shared_queue: set()}
        for name in self.tiers:
            held.setdefault(self.home(name), set()).add(name)
        for tier, queue in registry.overrides():
            held.setdefault(queue, set()).add(tier)

        def order(item: tuple[str, set[str]]) -> tuple[int, str]:
            queue, tiers = item
            return (-max((self.tiers[t].urgency for t in tiers), default=-1), queue)

        return {queue: frozenset(tiers) for queue, tiers in sorted(held.items(), key=order)}

    def check(self, registry: Registry) -> None:
        """Raise :class:`~prioroute.TopologyError` if a queue mixes urgencies that this
        broker cannot order (it has no message priority)."""
        if self.profile.supports_priority:
            return
        for queue, tiers in self.queues(registry).items():
            urgencies = {self.tiers[t].urgency for t in tiers}
            if len(urgencies) > 1:
                names = ", ".join(
                    f"{t!r} (urgency {self.tiers[t].urgency})"
                    for t in sorted(tiers, key=lambda t: -self.tiers[t].urgency)
                )
                raise TopologyError(
                    f"queue {queue!r} would hold tiers {names}, but the {self.profile.name!r} "
                    "broker profile has no message priority, so that queue would serve them "
                    "in arrival order. Use configure(app, topology='lanes') (the default for "
                    "this broker), or give each of these tiers its own queue, and run a "
                    "worker per lane (prioroute.plan_workers)"
                )

    def notes(self) -> tuple[str, ...]:
        """What this broker cannot do for these tiers, in words."""
        notes = self.profile.collapsed(self.tiers)
        timeout = self.profile.visibility_timeout_for(self.tiers)
        if timeout is not None:
            unbounded = sorted(n for n, t in self.tiers.items() if t.time_limit is None)
            if unbounded:
                notes.append(
                    f"{self.profile.name}: a task still running after visibility_timeout "
                    f"({timeout} s) is delivered again to another worker; tiers "
                    f"{', '.join(map(repr, unbounded))} have no time_limit to prevent it"
                )
        return tuple(notes)


def build(
    registry: Registry,
    *,
    broker: str | BrokerProfile = "rabbitmq",
    queue: str = DEFAULT_QUEUE,
    topology: str | None = None,
) -> Settings:
    """Compute the Celery settings for *registry* on *broker*. A pure function.

    Args:
        registry: The tasks and their tiers.
        broker: A :class:`BrokerProfile` or a profile name (``"rabbitmq"``, ``"redis"``,
            ``"rabbitmq-quorum"`` …).
        queue: The shared priority queue's name (also the default queue).
        topology: ``"shared"``, ``"lanes"`` or ``None`` for the profile's default.

    Raises:
        TopologyError: The broker has no message priority and a queue would hold tiers
            of different urgency.

    >>> from prioroute import Registry
    >>> registry = Registry()
    >>> registry.register("ops.deploy", "critical")
    >>> build(registry).task_routes["ops.deploy"]
    mappingproxy({'queue': 'prioroute', 'priority': 2})
    >>> build(registry, broker="redis").task_routes["ops.deploy"]
    mappingproxy({'queue': 'prioroute', 'priority': 0})
    """
    if not isinstance(registry, Registry):
        raise PriorouteError(f"build() takes a prioroute.Registry, got {registry!r}")
    layout = Layout.of(registry, profile_for(broker), queue, topology)
    layout.check(registry)
    registrations = registry.registrations()
    profile = layout.profile
    routes: dict[tuple[str, str | None], Mapping[str, Any]] = {}
    policies: dict[str, Mapping[str, Any]] = {}
    for r in registrations:  # one frozen route per (tier, queue), one policy per tier
        if (r.tier, r.queue) not in routes:
            routes[r.tier, r.queue] = MappingProxyType(layout.route(r))
        if r.tier not in policies:
            policies[r.tier] = MappingProxyType(layout.annotation(r))
    return Settings(
        task_routes={r.task: routes[r.tier, r.queue] for r in registrations},
        task_queues=tuple(layout.declare(name) for name in layout.queues(registry)),
        task_annotations={r.task: policies[r.tier] for r in registrations},
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_default_exchange_type=profile.exchange_type,
        task_default_queue_type=profile.queue_type,
        task_queue_max_priority=profile.max_priority(layout.tiers),
        task_inherit_parent_priority=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_delivery_mode="persistent",
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=("json",),
        broker_transport_options=profile.transport_options(layout.tiers),
        default_route=layout.default_route(),
        notes=layout.notes(),
    )
