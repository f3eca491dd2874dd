"""prioroute: Celery task priorities that actually work.

Decorate tasks with a tier, call :func:`configure`, and a plain ``celery worker`` serves
critical tasks first::

    import prioroute

    @prioroute.critical
    @app.task
    def deploy(): ...

    prioroute.configure(app)
"""

from __future__ import annotations

from typing import Any

from ._build import DEFAULT_QUEUE, TOPOLOGIES, Layout, Settings, build
from ._check import RULES, Finding, Report, Rule, check
from ._configure import configure, configured_registry, validate
from ._dead import DeadLetter, dead_letters, requeue_dead
from ._errors import (
    ConfigConflictError,
    MigrationError,
    PriorouteError,
    PriorouteWarning,
    QueueConflictError,
    RegistrationError,
    TierError,
    TopologyError,
    UnknownTaskError,
    UnknownTierError,
)
from ._migrate import Migration, migrate, recreate_queue
from ._plan import LANE_PREFETCH, Worker, WorkerPlan, plan_workers
from ._profiles import (
    NO_PRIORITY,
    PROFILES,
    RABBITMQ,
    RABBITMQ4_QUORUM,
    RABBITMQ_QUORUM,
    REDIS,
    SQS,
    BrokerProfile,
    profile_for,
)
from ._registry import Registration, Registry, TierDecorator, default_registry
from ._tiers import DEFAULT_TIERS, MAX_URGENCY, Retry, Tier

__all__ = [
    "DEFAULT_QUEUE",
    "DEFAULT_TIERS",
    "LANE_PREFETCH",
    "MAX_URGENCY",
    "NO_PRIORITY",
    "PROFILES",
    "RABBITMQ",
    "RABBITMQ4_QUORUM",
    "RABBITMQ_QUORUM",
    "REDIS",
    "RULES",
    "SQS",
    "TOPOLOGIES",
    "BrokerProfile",
    "ConfigConflictError",
    "DeadLetter",
    "Finding",
    "Layout",
    "Migration",
    "MigrationError",
    "PriorouteError",
    "PriorouteWarning",
    "QueueConflictError",
    "Registration",
    "RegistrationError",
    "Registry",
    "Report",
    "Retry",
    "Rule",
    "Settings",
    "Tier",
    "TierDecorator",
    "TierError",
    "TopologyError",
    "UnknownTaskError",
    "UnknownTierError",
    "Worker",
    "WorkerPlan",
    "build",
    "check",
    "configure",
    "configured_registry",
    "critical",
    "dead_letters",
    "default_registry",
    "low",
    "migrate",
    "normal",
    "plan_workers",
    "profile_for",
    "recreate_queue",
    "register",
    "requeue_dead",
    "tier",
    "validate",
]

#: ``@prioroute.critical``: register a task in the default registry's ``critical`` tier.
critical: TierDecorator = default_registry.critical
#: ``@prioroute.normal``: register a task in the default registry's ``normal`` tier.
normal: TierDecorator = default_registry.normal
#: ``@prioroute.low``: register a task in the default registry's ``low`` tier.
low: TierDecorator = default_registry.low
#: ``prioroute.register(task_or_name, tier, queue=None)`` on the default registry.
register = default_registry.register
#: ``prioroute.tier(name)``: a decorator for any tier of the default registry.
tier = default_registry.tier


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("prioroute")
    raise AttributeError(f"module 'prioroute' has no attribute {name!r}")
