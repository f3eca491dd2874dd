"""configure(app): the only place prioroute touches a Celery app."""

from __future__ import annotations

import difflib
import warnings
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
from celery import Celery, Task
from celery.app.autoretry import add_autoretry_behaviour
from celery.signals import before_task_publish
from kombu import Queue

from ._build import DEFAULT_QUEUE, REASONS, Layout, Settings, build
from ._errors import (
    ConfigConflictError,
    PriorouteError,
    PriorouteWarning,
    QueueConflictError,
    UnknownTaskError,
)
from ._guard import connect_dead_lettering
from ._operate import connect_wait_reporting
from ._profiles import BrokerProfile, profile_for
from ._registry import Registry, default_registry

__all__ = ["configure", "configured_registry", "validate"]

#: Task attributes that decide where a task goes; they beat task_routes, so prioroute's
#: tasks must not carry them.
_ROUTING_ATTRIBUTES = ("queue", "priority", "routing_key", "exchange", "exchange_type")

#: Settings prioroute sets to a single value; a different value of the user's is a conflict.
_SCALARS = (
    "task_default_exchange",
    "task_default_routing_key",
    "task_default_exchange_type",
    "task_default_queue_type",
    "task_queue_max_priority",
    "task_inherit_parent_priority",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_default_delivery_mode",
    "worker_cancel_long_running_tasks_on_connection_loss",
    "broker_connection_retry_on_startup",
    "worker_prefetch_multiplier",
    "task_serializer",
    "result_serializer",
    "accept_content",
)
_MERGED = ("task_routes", "task_queues", "task_annotations", "broker_transport_options")
_TOUCHED = (*_SCALARS, *_MERGED, "task_default_queue", "task_default_priority")

# Task attributes that Celery fills in from app.conf when it binds a task.
_FROM_CONFIG = dict(Task.from_config)


class _Router:
    """The router prioroute puts first in ``task_routes``: one dict lookup per task."""

    __slots__ = ("routes",)

    def __init__(self, routes: Mapping[str, Mapping[str, Any]]) -> None:
        self.routes = {name: dict(route) for name, route in routes.items()}

    def __repr__(self) -> str:
        return f"<prioroute router: {len(self.routes)} tasks>"

    def __call__(
        self, name: str, args: Any = None, kwargs: Any = None, options: Any = None, **kw: Any
    ) -> dict[str, Any] | None:
        route = self.routes.get(name)
        return None if route is None else dict(route)


class _DefaultRouter:
    """The router prioroute puts last in ``task_routes``: tasks no tier and no route of the
    app's own names go to the shared queue at the least urgent tier's priority."""

    __slots__ = ("route",)

    def __init__(self, route: Mapping[str, Any]) -> None:
        self.route = dict(route)

    def __repr__(self) -> str:
        return f"<prioroute default route: {self.route}>"

    def __call__(
        self, name: str, args: Any = None, kwargs: Any = None, options: Any = None, **kw: Any
    ) -> dict[str, Any]:
        return dict(self.route)


class _Annotations:
    """The task annotation prioroute puts first: each registered task gets its tier's policy."""

    __slots__ = ("_state",)

    def __init__(self, state: _AppState) -> None:
        self._state = state

    def __repr__(self) -> str:
        return "<prioroute tier policies>"

    def annotate(self, task: type[Task[Any, Any]]) -> dict[str, Any] | None:
        state = self._state
        registration = state.registry.match(task)
        if registration is None:
            return None
        attributes = _routing_attributes(task)
        default_priority = task.app.conf.task_default_priority  # type: ignore[attr-defined]
        if default_priority is not None and attributes.get("priority") == default_priority:
            raise ConfigConflictError(
                f"task {task.name!r} was given priority {default_priority!r} by "
                "task_default_priority, which beats its tier's priority when it is published; "
                "remove the task_default_priority setting"
            )
        if attributes:
            raise ConfigConflictError(_routing_attribute_message(task.name, attributes))
        return _policy(task, state.layout.annotation(registration), task.app.conf)  # type: ignore[attr-defined]

    def annotate_any(self) -> None:
        return None


@attrs.define(eq=False)
class _AppState:
    app: weakref.ref[Celery]
    registry: Registry
    layout: Layout
    settings: Settings
    originals: dict[str, Any]
    router: _Router
    declared: set[str]
    warned: set[str] = attrs.field(factory=set)

    def on_registration(self, task: str | None, tier: str, queue: str | None) -> None:
        """Keep the app's routes and queues in step with registrations made after configure()."""
        app = self.app()
        if app is None:
            return
        self.layout.check(self.registry)
        if task is not None:
            registration = self.registry.lookup(task)
            if registration is not None:
                self.router.routes[task] = self.layout.route(registration)
        name = queue or self.layout.tiers[tier].queue
        if name is not None and name not in self.declared:
            self.declared.add(name)
            declaration = self.layout.declare(name)
            app.conf.task_queues = (*app.conf.task_queues, declaration)
            amqp = app.__dict__.get("amqp")
            if amqp is not None and "queues" in amqp.__dict__:
                amqp.queues.add(declaration)


_STATES: weakref.WeakKeyDictionary[Celery, _AppState] = weakref.WeakKeyDictionary()


def configure(
    app: Celery,
    registry: Registry | None = None,
    *,
    broker: str | BrokerProfile | None = None,
    queue: str | None = None,
    topology: str | None = None,
) -> Settings:
    """Apply prioroute's settings for *registry* to *app*; return what was applied.

    Args:
        app: The Celery app.
        registry: The registry to apply; the default registry (the one the module-level
            decorators fill) if ``None``.
        broker: A broker profile or its name; chosen from ``app.conf.broker_url`` if
            ``None``.
        queue: The shared priority queue's name. ``None`` means the app's own
            ``task_default_queue`` if it set one, else ``"prioroute"``.
        topology: ``"shared"`` (one priority queue that a plain worker serves in urgency
            order), ``"lanes"`` (one queue per tier, for a worker per lane; see
            :func:`~prioroute.plan_workers`), or ``None`` for the broker's default:
            shared where it has message priority, lanes where it has none.

    Nothing the app already has is dropped silently: its routes, queues and annotations for
    other tasks keep working, after prioroute's own. A setting of the app's that
    contradicts prioroute's raises :class:`~prioroute.ConfigConflictError` listing every
    conflict and its fix. Calling ``configure`` again is the same as calling it once, and
    tasks registered later, such as those autodiscovery imports, are routed too.
    """
    if not isinstance(app, Celery):
        raise PriorouteError(f"configure() takes a Celery app, got {app!r}")
    registry = default_registry if registry is None else registry
    if not isinstance(registry, Registry):
        raise PriorouteError(
            f"configure(registry=...) takes a prioroute.Registry, got {registry!r}"
        )
    conf = app.conf
    previous = _STATES.get(app)
    if previous is not None and previous.registry is not registry:
        raise PriorouteError(
            f"app {app.main!r} was already configured with another registry; "
            "configure each app from one registry"
        )
    originals = previous.originals if previous else _originals(conf)

    profile = profile_for(broker, conf.broker_url)
    shared = _shared_queue(queue, originals["task_default_queue"], originals["set"])
    settings = build(registry, broker=profile, queue=shared, topology=topology)
    # app._tasks, not app.tasks: the latter would finalize the app (create every task now).
    existing = list(app._tasks.values())  # type: ignore[attr-defined]
    bound = [(t, r) for t in existing if (r := registry.match(type(t))) is not None]
    conflicts = _conflicts(originals, settings, profile, registry, [t for t, _ in bound])
    if conflicts:
        kind = (
            QueueConflictError
            if all(c.startswith("queue") for c in conflicts)
            else ConfigConflictError
        )
        lines = "\n".join(f"  - {c}" for c in conflicts)
        raise kind(f"app {app.main!r} has settings that contradict prioroute's:\n{lines}")

    layout = Layout.of(registry, profile, shared, topology)
    router = _Router(settings.task_routes)
    declared = {q.name for q in settings.task_queues}
    state = _AppState(weakref.ref(app), registry, layout, settings, originals, router, declared)
    values = settings.as_dict(tasks=False)
    default = () if settings.default_route is None else (_DefaultRouter(settings.default_route),)
    values["task_routes"] = (router, *_as_tuple(originals["task_routes"]), *default)
    values["task_annotations"] = (_Annotations(state), *_as_tuple(originals["task_annotations"]))
    values["task_queues"] = (
        *settings.task_queues,
        *(q for q in originals["task_queues"] or () if q.name not in declared),
    )
    values["broker_transport_options"] = _merged_options(
        originals["broker_transport_options"] or {}, settings.broker_transport_options
    )
    conf_before = {key: conf.get(key) for key in _FROM_CONFIG.values()}
    conf.update(values)
    _STATES[app] = state
    if previous is None:
        registry.subscribe(state.on_registration)
    connect_wait_reporting()
    connect_dead_lettering()
    if layout.profile.visibility_timeout:
        before_task_publish.connect(
            _check_countdown, weak=False, dispatch_uid="prioroute.check_countdown"
        )
    _refresh_caches(app)
    for task, registration in bound:
        _apply_policy(task, layout.annotation(registration), conf_before)
    return settings


def layout_of(app: Celery) -> Layout | None:
    """The layout *app* was configured with, or ``None``."""
    state = _STATES.get(app)
    return None if state is None else state.layout


def configured_registry(app: Celery) -> Registry | None:
    """The registry *app* was configured from, or ``None`` if ``configure()`` never ran."""
    state = _STATES.get(app)
    return None if state is None else state.registry


def learn_task_names(app: Celery, registry: Registry) -> Mapping[str, Task[Any, Any]]:
    """Finalize *app* and let *registry* match every task, so function registrations get names.

    Returns the app's tasks by name.
    """
    tasks = app.tasks
    for task in list(tasks.values()):
        registry.match(type(task))
    return tasks


def validate(app: Celery, registry: Registry | None = None) -> None:
    """Raise :class:`~prioroute.UnknownTaskError` for registered tasks *app* does not have.

    Finalizes the app (imports its tasks), so call it once everything is imported: in a
    test, at worker start-up, or from ``prioroute check``.
    """
    # Not `registry or ...`: an empty registry is falsy (it has a length).
    if registry is None:
        registry = configured_registry(app)
    if registry is None:
        registry = default_registry
    tasks = learn_task_names(app, registry)
    missing = [r.task for r in registry.registrations() if r.task not in tasks]
    if missing:
        names = [n for n in tasks if not n.startswith("celery.")]
        lines = []
        for name in missing:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  - {name!r}{hint}")
        raise UnknownTaskError(
            f"app {app.main!r} has no task called:\n" + "\n".join(lines) + "\n"
            "register the name Celery gives the task (see `celery -A proj inspect registered`), "
            "or import the module that defines it"
        )


# -- helpers ---------------------------------------------------------------------------------


def _originals(conf: Any) -> dict[str, Any]:
    """The app's own values of every setting prioroute touches, and which it set itself."""
    originals = {key: conf.get(key) for key in _TOUCHED}
    originals["set"] = frozenset(key for key in _TOUCHED if conf.value_set_for(key))
    return originals


def _shared_queue(queue: str | None, users: str | None, user_set_keys: frozenset[str]) -> str:
    user_set = bool(users) and "task_default_queue" in user_set_keys
    if queue is None:
        return users if user_set and users else DEFAULT_QUEUE
    if user_set and users != queue:
        raise ConfigConflictError(
            f"task_default_queue is {users!r} but configure(queue={queue!r}) asks for "
            f"{queue!r}; drop one of them"
        )
    return queue


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _routing_attributes(task: type[Task[Any, Any]]) -> dict[str, Any]:
    return {a: task.__dict__[a] for a in _ROUTING_ATTRIBUTES if task.__dict__.get(a) is not None}


def _routing_attribute_message(name: str, attributes: Mapping[str, Any]) -> str:
    given = ", ".join(f"{k}={v!r}" for k, v in attributes.items())
    return (
        f"task {name!r} sets {given} as task options, which beat prioroute's route "
        f"(and are deprecated since Celery 5.3); remove them from @app.task(...) and let "
        "the tier decide"
    )


def _policy(
    task: type[Task[Any, Any]], policy: Mapping[str, Any], conf: Mapping[str, Any]
) -> dict[str, Any]:
    """*policy* without the keys the task set itself (``@app.task(max_retries=5)`` wins)."""
    result = {}
    for key, value in policy.items():
        if key in task.__dict__:
            own = task.__dict__[key]
            inherited = own == _configured(key, conf)
            if not inherited and own is not None:
                continue
        result[key] = value
    return result


def _configured(key: str, conf: Mapping[str, Any]) -> Any:
    """The value Celery gives task attribute *key* from the configuration when binding,
    or a marker that matches nothing if it takes none."""
    config_name = _FROM_CONFIG.get(key)
    if config_name is None:
        return _NOTHING
    value = conf.get(config_name)
    if value is None and key in ("acks_on_failure", "acks_on_timeout"):
        # Celery 5.7 derives these from task_acks_on_failure_or_timeout.
        fallback = conf.get("task_acks_on_failure_or_timeout")
        return True if fallback is None else fallback
    return value


_NOTHING = object()


def _apply_policy(task: Task[Any, Any], policy: Mapping[str, Any], conf: Mapping[str, Any]) -> None:
    """Give a task that Celery already bound its tier's policy (binding copied the old conf)."""
    cls = type(task)
    for key, value in _policy(cls, policy, conf).items():
        setattr(cls, key, value)
    if cls.__dict__.get("autoretry_for") and not hasattr(task, "_orig_run"):
        add_autoretry_behaviour(task)


#: Transport options prioroute sets for apps that do not set them themselves.
_USERS_WIN = ("visibility_timeout", "unacked_restore_throttle")


def _merged_options(user: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """The app's transport options with prioroute's; the app's own visibility timeout
    (``_conflicts`` has refused one that is too short) and restore throttle are kept."""
    merged = {**user, **ours}
    for key in _USERS_WIN:
        if key in ours and key in user:
            merged[key] = user[key]
    return merged


def _visibility_message(timeout: Any, minimum: int, registry: Registry) -> str:
    unbounded = sorted(name for name, tier in registry.tiers.items() if tier.time_limit is None)
    why = (
        f"tiers {', '.join(map(repr, unbounded))} have no time_limit, so their tasks may run "
        f"for any time; prioroute needs at least {minimum} s"
        if unbounded
        else f"the tiers' longest retry delay or time limit needs at least {minimum} s"
    )
    return (
        f"broker_transport_options['visibility_timeout'] = {timeout!r}: {why}, or acks_late "
        "tasks are delivered twice; raise it"
        + (", or give those tiers a time_limit" if unbounded else "")
        + ", or remove the option"
    )


def _check_countdown(sender: str | None = None, headers: Any = None, **_: Any) -> None:
    """Warn once per task when a countdown or ETA outlasts the visibility timeout.

    On Redis and SQS, a worker holds an ETA task unacknowledged until it is due; once the
    visibility timeout passes, the broker hands it to another worker too.
    """
    eta = (headers or {}).get("eta")
    if not eta or sender is None:
        return
    try:
        due = datetime.fromisoformat(eta)
    except (TypeError, ValueError):
        return
    now = datetime.now(timezone.utc) if due.tzinfo else datetime.now()
    delay = (due - now).total_seconds()
    for app, state in list(_STATES.items()):
        if not state.layout.profile.visibility_timeout or sender in state.warned:
            continue
        if sender not in app._tasks and state.registry.lookup(sender) is None:  # type: ignore[attr-defined]
            continue
        options = app.conf.broker_transport_options or {}
        timeout = options.get("visibility_timeout")
        if timeout is not None and delay > timeout:
            state.warned.add(sender)
            warnings.warn(
                f"task {sender!r} was published with a countdown/ETA of {delay:.0f} s, longer "
                f"than broker_transport_options['visibility_timeout'] ({timeout} s): the "
                "broker will deliver it again to another worker before it is due, so it runs "
                "twice. Shorten the countdown, or raise visibility_timeout above it",
                PriorouteWarning,
                stacklevel=2,
            )


def _refresh_caches(app: Celery) -> None:
    """Make Celery re-read routes, queues and annotations it cached on first use."""
    app.__dict__.pop("annotations", None)
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        for attr in ("queues", "router", "default_queue"):
            amqp.__dict__.pop(attr, None)
        amqp.flush_routes()


def _named_entries(value: Any, names: Mapping[str, str]) -> list[tuple[Mapping[str, Any], str]]:
    """(mapping, name) for each key of a routes/annotations setting that names a registered task."""
    return [
        (mapping, name)
        for mapping in _as_tuple(value)
        if isinstance(mapping, Mapping)
        for name in sorted(set(mapping) & set(names))
    ]


def _queue_args(queue: Queue) -> tuple[Any, ...]:
    arguments = dict(queue.queue_arguments or {})
    max_priority = getattr(queue, "max_priority", None)
    if max_priority is not None:
        arguments.setdefault("x-max-priority", max_priority)
    exchange = queue.exchange.name if queue.exchange is not None else None
    return (exchange or None, queue.routing_key or None, arguments)


def _conflicts(
    originals: Mapping[str, Any],
    settings: Settings,
    profile: BrokerProfile,
    registry: Registry,
    bound: Iterable[Task[Any, Any]],
) -> list[str]:
    conflicts: list[str] = []
    ours = {key: getattr(settings, key) for key in _SCALARS}
    ours["accept_content"] = list(settings.accept_content)
    for key in _SCALARS:
        user, mine = originals[key], ours[key]
        if key == "accept_content" and user is not None:
            user, mine = sorted(user), sorted(mine)
        if key == "task_default_delivery_mode":  # Celery takes 2 or "persistent" alike
            user = {1: "transient", 2: "persistent"}.get(user, user)
        if key in originals["set"] and user != mine:
            conflicts.append(
                f"{key} = {originals[key]!r}: prioroute sets {ours[key]!r} because it "
                f"{REASONS[key]}; remove the setting"
            )
    if originals["task_default_priority"] is not None:
        conflicts.append(
            f"task_default_priority = {originals['task_default_priority']!r}: Celery copies it "
            "into every task, where it beats each tier's priority when a task is published; "
            "remove the setting"
        )
    tiers = {r.task: r.tier for r in registry.registrations()}
    for route, name in _named_entries(originals["task_routes"], tiers):
        conflicts.append(
            f"task_routes[{name!r}] = {route[name]!r}: the task is registered as "
            f"{tiers[name]!r}, so prioroute routes it; remove the route or the registration"
        )
    for _, name in _named_entries(originals["task_annotations"], tiers):
        conflicts.append(
            f"task_annotations[{name!r}]: the task's policy comes from its tier "
            f"{tiers[name]!r}; set it on the tier instead"
        )
    policy_keys = {k for name in tiers for k in settings.task_annotations[name]}
    for annotation in _as_tuple(originals["task_annotations"]):
        if isinstance(annotation, Mapping):
            overlap = sorted(set(annotation.get("*", {})) & policy_keys)
            if overlap:
                conflicts.append(
                    f"task_annotations['*'] sets {', '.join(overlap)} for every task, over the "
                    "tiers' policies; set them on the tiers instead"
                )
    by_name = {q.name: q for q in settings.task_queues}
    for queue in originals["task_queues"] or ():
        mine_q = by_name.get(queue.name)
        if mine_q is not None and _queue_args(queue) != _queue_args(mine_q):
            exchange, routing_key, arguments = _queue_args(mine_q)
            conflicts.append(
                f"queue {queue.name!r} is declared in task_queues with exchange="
                f"{_queue_args(queue)[0]!r}, routing_key={_queue_args(queue)[1]!r}, arguments="
                f"{_queue_args(queue)[2]!r}; prioroute declares it with exchange={exchange!r}, "
                f"routing_key={routing_key!r}, arguments={arguments!r} (note: kombu ignores "
                "Queue(priority=...); only max_priority= sets x-max-priority); remove it from "
                "task_queues and let prioroute declare it"
            )
    user_options = originals["broker_transport_options"] or {}
    for key, value in settings.broker_transport_options.items():
        if key == "visibility_timeout":
            minimum = profile.minimum_visibility_timeout(registry.tiers) or value
            if user_options.get(key, minimum) < minimum:
                conflicts.append(_visibility_message(user_options[key], minimum, registry))
        elif key not in _USERS_WIN and key in user_options and user_options[key] != value:
            conflicts.append(
                f"broker_transport_options[{key!r}] = {user_options[key]!r}: prioroute sets "
                f"{value!r} because it {REASONS['broker_transport_options']}; remove the option"
            )
    for task in bound:
        attributes = _routing_attributes(type(task))
        if attributes:
            conflicts.append(_routing_attribute_message(task.name, attributes))
    return conflicts
