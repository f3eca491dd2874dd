"""Tiers: how urgent a group of tasks is, and the policy its tasks run with."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._errors import TierError

__all__ = ["DEFAULT_TIERS", "MAX_URGENCY", "Retry", "Tier"]

#: The highest urgency a tier may have. Urgencies run from 0 (least urgent) to 9: ten
#: levels, which is as many as Redis can emulate and more than RabbitMQ recommends.
MAX_URGENCY = 9

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_QUEUE = re.compile(r"^[^\s*]+$")


def _check_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise TierError(
            f"tier name {value!r} is not usable: use letters, digits, '_' or '-', "
            "starting with a letter or '_' (e.g. 'critical')"
        )


def check_queue_name(value: str | None, *, what: str) -> None:
    """Raise :class:`TierError` unless *value* is ``None`` or a usable queue name."""
    if value is None:
        return
    if not isinstance(value, str) or not _QUEUE.match(value):
        raise TierError(
            f"{what}: queue name {value!r} is not usable; "
            "use a non-empty name without spaces or '*' (e.g. 'cleanup')"
        )


def _non_negative(what: str) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or value < 0):
            raise TierError(f"{what} {attribute.name} must be >= 0 or None, got {value!r}")

    return check


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    items = (value,) if isinstance(value, type) else tuple(value)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TierError(
                f"Retry.autoretry_for takes exception classes, got {item!r}; "
                "e.g. autoretry_for=(ConnectionError,)"
            )
    return items


@attrs.frozen
class Retry:
    """How a tier's tasks are retried.

    The fields map onto Celery's task options of the same meaning: ``max_retries``,
    ``default_retry_delay`` (*delay*, seconds), ``retry_backoff``, ``retry_backoff_max``,
    ``retry_jitter`` and ``autoretry_for``. A task retries only when it calls
    ``self.retry()`` or raises one of *autoretry_for*. The defaults are Celery's own.

    >>> Retry(max_retries=3, delay=60).delay
    60.0
    """

    max_retries: int | None = attrs.field(default=3)
    delay: float = attrs.field(default=180.0, converter=float, validator=_non_negative("Retry"))
    backoff: bool | float = attrs.field(default=False)
    backoff_max: float = attrs.field(
        default=600.0, converter=float, validator=_non_negative("Retry")
    )
    jitter: bool = True
    autoretry_for: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=_exception_types
    )

    @max_retries.validator
    def _check_max(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise TierError(f"Retry.max_retries must be an int >= 0 or None, got {value!r}")

    @backoff.validator
    def _check_backoff(self, attribute: attrs.Attribute[bool | float], value: bool | float) -> None:
        if not isinstance(value, bool) and (not isinstance(value, int | float) or value < 0):
            raise TierError(f"Retry.backoff must be True/False or a factor >= 0, got {value!r}")

    def task_options(self) -> dict[str, Any]:
        """The Celery task attributes this policy sets."""
        options: dict[str, Any] = {
            "max_retries": self.max_retries,
            "default_retry_delay": self.delay,
            "retry_backoff": self.backoff,
            "retry_backoff_max": int(self.backoff_max),
            "retry_jitter": self.jitter,
        }
        if self.autoretry_for:
            options["autoretry_for"] = self.autoretry_for
        return options


def _rate_limit(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not re.match(r"^\d+(\.\d+)?(/[smh])?$", value):
        raise TierError(
            f"Tier rate_limit {value!r} is not a Celery rate: use e.g. '10/s', '100/m' or '1000/h'"
        )


@attrs.frozen
class Tier:
    """A level of urgency and the policy its tasks run with.

    Args:
        name: How the tier is named in registrations (``"critical"``).
        urgency: 0 (least urgent) to :data:`MAX_URGENCY`; higher is more urgent. Only the
            order of urgencies matters: each broker profile maps it onto that broker's
            priority numbers.
        queue: The queue this tier's tasks go to. ``None`` (the default) means the shared
            priority queue, so one plain worker serves every tier in urgency order. A name
            makes a *lane*: a separate priority queue, meant for its own workers.
        retry: The tier's retry policy.
        time_limit: Hard time limit in seconds (Celery's ``time_limit``), or ``None``.
        soft_time_limit: Soft time limit in seconds, or ``None``.
        rate_limit: A Celery rate such as ``"10/s"`` (per worker), or ``None``.
        acks_late: Acknowledge after the task ran, so a task a dying worker held is
            redelivered instead of lost.
        reject_on_worker_lost: With *acks_late*, requeue a task whose worker process died.
        max_deliveries: How often a task whose worker process dies (``os._exit``, an
            OOM kill, a segfault) is delivered before it goes to its queue's dead-letter
            queue ``<queue>.dead`` instead, so that one poison message cannot block a lane
            forever; ``None`` redelivers it for ever. Counted by prioroute on RabbitMQ
            classic queues and Redis; on quorum queues the broker's ``x-delivery-limit``
            (:attr:`BrokerProfile.delivery_limit`) counts instead.

    >>> Tier("urgent", urgency=9, time_limit=300).urgency
    9
    """

    name: str = attrs.field(validator=_check_name)
    urgency: int = attrs.field()
    queue: str | None = attrs.field(default=None, kw_only=True)
    retry: Retry = attrs.field(factory=Retry, kw_only=True)
    time_limit: float | None = attrs.field(
        default=None, kw_only=True, validator=_non_negative("Tier")
    )
    soft_time_limit: float | None = attrs.field(
        default=None, kw_only=True, validator=_non_negative("Tier")
    )
    rate_limit: str | None = attrs.field(default=None, kw_only=True, validator=_rate_limit)
    acks_late: bool = attrs.field(default=True, kw_only=True)
    reject_on_worker_lost: bool = attrs.field(default=True, kw_only=True)
    max_deliveries: int | None = attrs.field(default=5, kw_only=True)

    @urgency.validator
    def _check_urgency(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_URGENCY:
            raise TierError(
                f"tier {self.name!r}: urgency must be an int from 0 (least urgent) to "
                f"{MAX_URGENCY} (most urgent), got {value!r}"
            )

    @max_deliveries.validator
    def _check_deliveries(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise TierError(
                f"tier {self.name!r}: max_deliveries must be an int >= 1 or None, got {value!r}"
            )

    @queue.validator
    def _check_queue(self, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        check_queue_name(value, what=f"tier {self.name!r}")

    @retry.validator
    def _check_retry(self, attribute: attrs.Attribute[Retry], value: Retry) -> None:
        if not isinstance(value, Retry):
            raise TierError(
                f"tier {self.name!r}: retry must be a prioroute.Retry, got {value!r}; "
                "e.g. retry=Retry(max_retries=3, delay=60)"
            )

    def task_options(self) -> dict[str, Any]:
        """The Celery task attributes this tier's policy sets on each of its tasks.

        Never ``queue`` or ``priority``: those come from ``task_routes`` so that a route
        is the one place a task's destination is decided.
        """
        options = self.retry.task_options()
        options["acks_late"] = self.acks_late
        options["reject_on_worker_lost"] = self.reject_on_worker_lost
        if self.acks_late and self.reject_on_worker_lost:
            # Celery 5.7+: a task stopped by its hard time limit is requeued, not
            # acknowledged as failed. A worker that lost the broker stops its tasks and
            # their time limits fire then: acknowledged, they would be lost on Redis.
            options["acks_on_timeout"] = False
        for key in ("time_limit", "soft_time_limit", "rate_limit"):
            value = getattr(self, key)
            if value is not None:
                options[key] = value
        return options


#: The three tiers every registry starts with, most urgent first.
DEFAULT_TIERS: Mapping[str, Tier] = MappingProxyType(
    {
        "critical": Tier("critical", urgency=9),
        "normal": Tier("normal", urgency=5),
        "low": Tier("low", urgency=1),
    }
)
