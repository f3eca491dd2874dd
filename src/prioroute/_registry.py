"""The registry: which task belongs to which tier."""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, overload

import attrs
from celery import Task

from ._errors import RegistrationError, UnknownTierError
from ._targets import identify, task_function
from ._tiers import DEFAULT_TIERS, Tier, check_queue_name

__all__ = ["Registration", "Registry", "TierDecorator", "default_registry"]

T = TypeVar("T")


@attrs.frozen
class Registration:
    """One task's place in the registry.

    Attributes:
        task: The Celery task name (``"audit.tasks.cleanup_old_logs"``).
        tier: The tier's name.
        queue: A per-task queue (a lane) that overrides the tier's, or ``None``.
    """

    task: str
    tier: str
    queue: str | None = None


@attrs.frozen
class _Pending:
    """A registration made through a function whose Celery task name is not known yet."""

    tier: str
    queue: str | None


Listener = Callable[[str | None, str, str | None], None]


class TierDecorator:
    """Registers tasks into one tier; returned by ``registry.tier(name)``.

    Use it bare (``@registry.critical``) or with options
    (``@registry.low(queue="cleanup")``), above or below ``@app.task``. It returns what it
    decorates unchanged and never creates or binds the task.
    """

    __slots__ = ("_registry", "_tier")

    def __init__(self, registry: Registry, tier: str) -> None:
        self._registry = registry
        self._tier = tier

    def __repr__(self) -> str:
        return f"<TierDecorator {self._tier!r}>"

    @overload
    def __call__(self, target: T, /) -> T: ...

    @overload
    def __call__(self, target: None = None, /, *, queue: str | None = None) -> Callable[[T], T]: ...

    def __call__(self, target: Any = None, /, *, queue: str | None = None) -> Any:
        if target is None:

            def decorate(target: T) -> T:
                self._registry.register(target, self._tier, queue=queue)
                return target

            return decorate
        self._registry.register(target, self._tier, queue=queue)
        return target


class Registry:
    """Task name → tier, plus per-task options such as ``queue=``.

    A registry starts with the :data:`~prioroute.DEFAULT_TIERS` (``critical``, ``normal``,
    ``low``) unless *tiers* is given.

    >>> registry = Registry()
    >>> registry.register("audit.tasks.cleanup_old_logs", "low")
    >>> registry.lookup("audit.tasks.cleanup_old_logs")
    Registration(task='audit.tasks.cleanup_old_logs', tier='low', queue=None)
    """

    def __init__(self, tiers: Iterable[Tier] | None = None) -> None:
        self._tiers: dict[str, Tier] = {}
        for tier in DEFAULT_TIERS.values() if tiers is None else tiers:
            if not isinstance(tier, Tier):
                raise RegistrationError(
                    f"Registry(tiers=...) takes prioroute.Tier objects, got {tier!r}"
                )
            if tier.name in self._tiers:
                raise RegistrationError(
                    f"tier {tier.name!r} is defined twice; give each tier one definition"
                )
            self._tiers[tier.name] = tier
        if not self._tiers:
            raise RegistrationError("a registry needs at least one tier")
        self._by_name: dict[str, Registration] = {}
        self._by_function: dict[Callable[..., Any], _Pending] = {}
        self._listeners: list[weakref.WeakMethod[Listener]] = []

    def __repr__(self) -> str:
        return (
            f"<Registry tiers={list(self._tiers)} tasks={len(self._by_name)} "
            f"pending={len(self._by_function)}>"
        )

    # -- tiers -----------------------------------------------------------------------------

    @property
    def tiers(self) -> Mapping[str, Tier]:
        """The tiers, by name (read-only)."""
        return MappingProxyType(self._tiers)

    def define(self, tier: Tier) -> None:
        """Add *tier*, or replace the tier of the same name (e.g. to change its policy).

        Tiers are fixed once an app was configured from this registry, because the queues'
        ``x-max-priority`` depends on them and a broker refuses to change it.
        """
        if not isinstance(tier, Tier):
            raise RegistrationError(f"define() takes a prioroute.Tier, got {tier!r}")
        if self._live_listeners():
            raise RegistrationError(
                f"cannot define tier {tier.name!r}: an app was already configured from this "
                "registry; define tiers before calling prioroute.configure(app)"
            )
        self._tiers[tier.name] = tier

    def tier(self, name: str) -> TierDecorator:
        """A decorator that registers tasks into the tier called *name*."""
        self._tier_or_raise(name, what="tier()")
        return TierDecorator(self, name)

    @property
    def critical(self) -> TierDecorator:
        """Decorator for the ``critical`` tier: ``@registry.critical``."""
        return self.tier("critical")

    @property
    def normal(self) -> TierDecorator:
        """Decorator for the ``normal`` tier: ``@registry.normal``."""
        return self.tier("normal")

    @property
    def low(self) -> TierDecorator:
        """Decorator for the ``low`` tier: ``@registry.low(queue="cleanup")``."""
        return self.tier("low")

    def _tier_or_raise(self, name: str, *, what: str) -> Tier:
        try:
            return self._tiers[name]
        except (KeyError, TypeError):
            pass
        close = difflib.get_close_matches(str(name), list(self._tiers), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownTierError(
            f"{what}: unknown tier {name!r}; {hint}known tiers: "
            f"{', '.join(repr(t) for t in self._tiers)} "
            "(define another with registry.define(prioroute.Tier(...)))"
        ) from None

    # -- registrations ---------------------------------------------------------------------

    def register(self, target: object, tier: str, *, queue: str | None = None) -> None:
        """Put *target* into *tier*.

        *target* is a task name, a Celery task (``@app.task`` / ``@shared_task`` object or
        a Task class) or the function a task is made from. Registering the same task twice
        with the same tier and options is harmless; with different ones it is an error.
        """
        found = identify(target)  # first: a proxy's repr() would create the task
        label = found.name or f"{found.function.__module__}.{found.function.__qualname__}"  # type: ignore[union-attr]
        self._tier_or_raise(tier, what=f"register({label!r})")
        check_queue_name(queue, what=f"register({label!r})")
        if found.function is not None:
            self._add_function(found.function, _Pending(tier, queue), found.name)
        if found.name is not None:
            self._add_name(Registration(found.name, tier, queue))

    def _add_function(
        self, function: Callable[..., Any], pending: _Pending, name: str | None
    ) -> None:
        known = self._by_function.get(function)
        if known is not None and known != pending:
            label = name or f"{function.__module__}.{function.__qualname__}"
            raise RegistrationError(
                _conflict(label, known.tier, known.queue, pending.tier, pending.queue)
            )
        self._by_function[function] = pending
        if name is None:
            self._notify(None, pending.tier, pending.queue)

    def _add_name(self, registration: Registration) -> None:
        known = self._by_name.get(registration.task)
        if known is not None:
            if known != registration:
                raise RegistrationError(
                    _conflict(
                        registration.task,
                        known.tier,
                        known.queue,
                        registration.tier,
                        registration.queue,
                    )
                )
            return
        self._by_name[registration.task] = registration
        self._notify(registration.task, registration.tier, registration.queue)

    def lookup(self, task: str) -> Registration | None:
        """The registration of the task called *task*, or ``None``."""
        return self._by_name.get(task)

    def match(self, task_class: type[Task[Any, Any]]) -> Registration | None:
        """The registration of a Celery task class, by its name or by its function.

        A task registered through its function is known by name from here on.
        """
        name = str(task_class.name)
        known = self._by_name.get(name)
        if known is not None:
            return known
        function = task_function(task_class)
        pending = self._by_function.get(function) if function is not None else None
        if pending is None:
            return None
        registration = Registration(name, pending.tier, pending.queue)
        self._add_name(registration)
        return registration

    def registrations(self) -> tuple[Registration, ...]:
        """Every registration whose task name is known, sorted by task name."""
        return tuple(self._by_name[name] for name in sorted(self._by_name))

    def lanes(self) -> frozenset[str]:
        """Every queue a tier or a registration names (the shared queue excluded)."""
        queues = {tier.queue for tier in self._tiers.values()}
        queues.update(queue for _, queue in self.overrides())
        return frozenset(q for q in queues if q is not None)

    def overrides(self) -> frozenset[tuple[str, str]]:
        """``(tier, queue)`` for every registration, named or pending, with its own queue."""
        found = {(r.tier, r.queue) for r in self._by_name.values() if r.queue is not None}
        found.update((p.tier, p.queue) for p in self._by_function.values() if p.queue is not None)
        return frozenset(found)

    def queue_of(self, registration: Registration) -> str | None:
        """The lane *registration* goes to, or ``None`` for the shared queue."""
        return registration.queue or self._tiers[registration.tier].queue

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, task: object) -> bool:
        return task in self._by_name

    # -- listeners (configured apps) ---------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call *listener(task, tier, queue)* for every registration from now on.

        *task* is ``None`` while a function's task name is not known yet. Bound methods
        are held weakly, so subscribing does not keep an app alive.
        """
        self._listeners.append(weakref.WeakMethod(listener))

    def _live_listeners(self) -> list[Listener]:
        alive = [(ref, ref()) for ref in self._listeners]
        self._listeners = [ref for ref, fn in alive if fn is not None]
        return [fn for _, fn in alive if fn is not None]

    def _notify(self, task: str | None, tier: str, queue: str | None) -> None:
        if self._listeners:
            for listener in self._live_listeners():
                listener(task, tier, queue)


def _conflict(task: str, tier: str, queue: str | None, new_tier: str, new_queue: str | None) -> str:
    if tier != new_tier:
        return (
            f"task {task!r} is registered as {tier!r} and {new_tier!r}; "
            "remove one of the decorators or register() calls"
        )
    return (
        f"task {task!r} is registered in tier {tier!r} with queue={queue!r} and "
        f"queue={new_queue!r}; keep one queue= option"
    )


#: The registry that ``prioroute.critical``, ``normal``, ``low``, ``tier`` and ``register``
#: use, and that ``configure(app)`` reads unless given another.
default_registry = Registry()
