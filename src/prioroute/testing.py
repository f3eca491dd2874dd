"""Helpers for your own test suite: keep your routing honest.

``assert_routes(app)`` checks, through Celery's own router, that every registered task goes
to its tier's queue with its tier's priority and that every routed queue is declared::

    import prioroute.testing
    from proj.celery import app

    def test_routing():
        prioroute.testing.assert_routes(app)

``assert_clean(app)`` runs ``prioroute check`` on any Celery app and fails on errors and
warnings, so a config that drifts into a mistake fails your tests, not your deploys.

The hypothesis strategies (:func:`task_names`, :func:`tiers`, :func:`tier_sets`,
:func:`registries`, :func:`queue_names`) need the ``testing`` extra:
``pip install prioroute[testing]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery

from ._check import check
from ._configure import configured_registry, layout_of, validate
from ._errors import UnknownTaskError

if TYPE_CHECKING:
    from ._strategies import queue_names, registries, task_names, tier_sets, tiers

__all__ = [
    "assert_clean",
    "assert_routes",
    "published_route",
    "queue_names",
    "registries",
    "task_names",
    "tier_sets",
    "tiers",
]

_STRATEGIES = frozenset({"queue_names", "registries", "task_names", "tier_sets", "tiers"})


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        try:
            from . import _strategies
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"prioroute.testing.{name} needs hypothesis: pip install 'prioroute[testing]'"
            ) from exc
        return getattr(_strategies, name)
    raise AttributeError(f"module 'prioroute.testing' has no attribute {name!r}")


def published_route(app: Celery, name: str) -> dict[str, Any]:
    """Where Celery publishes task *name*, and with which priority, as ``apply_async`` would.

    Unlike ``app.amqp.router.route({}, name)`` this includes the task's own options, which
    Celery merges in before routing: a ``priority`` task attribute (or
    ``task_default_priority``, which Celery copies into every task) beats the route.
    """
    task = app.tasks[name]
    exec_options = task._get_exec_options()  # type: ignore[attr-defined]
    options = {k: v for k, v in exec_options.items() if v is not None}
    route = app.amqp.router.route(options, name)
    queue = route.get("queue")
    return {"queue": getattr(queue, "name", queue), "priority": route.get("priority")}


def assert_routes(app: Celery) -> None:
    """Assert that Celery routes every task registered with prioroute as its tier says.

    Checks, for every registered task: Celery knows the task; the priority it is published
    with (see :func:`published_route`) is its tier's; it goes to its tier's queue (or its
    own lane); that queue is declared with an ``x-max-priority`` that admits the priority.
    Raises ``AssertionError`` listing every problem.
    """
    registry = configured_registry(app)
    layout = layout_of(app)
    if registry is None or layout is None:
        raise AssertionError(
            f"app {app.main!r} was not configured by prioroute; call prioroute.configure(app)"
        )
    problems: list[str] = []
    try:
        validate(app, registry)
    except UnknownTaskError as exc:
        problems.append(str(exc))
    queues = app.amqp.queues
    for registration in registry.registrations():
        if registration.task not in app.tasks:
            continue
        want_queue = layout.queue_name(registration)
        want_priority = None if layout.priorities is None else layout.priorities[registration.tier]
        try:
            got = published_route(app, registration.task)
        except Exception as exc:  # Celery's QueueNotFound and the like: report, don't crash
            problems.append(f"task {registration.task!r} cannot be routed: {exc}")
            continue
        if got != {"queue": want_queue, "priority": want_priority}:
            problems.append(
                f"task {registration.task!r} (tier {registration.tier!r}) is published to "
                f"{got['queue']!r} with priority {got['priority']!r}; its tier wants "
                f"{want_queue!r} with priority {want_priority!r}"
            )
        declared = queues.get(want_queue)
        max_priority = getattr(declared, "max_priority", None)
        if declared is None or max_priority is None or max_priority < want_priority:
            problems.append(
                f"queue {want_queue!r} (task {registration.task!r}) is "
                + (
                    "not declared"
                    if declared is None
                    else f"declared with x-max-priority {max_priority!r}"
                )
                + f"; it needs x-max-priority >= {want_priority}"
            )
    if problems:
        raise AssertionError(
            "prioroute routing problems:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def assert_clean(app: Celery, *, ignore: tuple[str, ...] = (), strict: bool = True) -> None:
    """Fail with ``prioroute check``'s report unless *app* has no errors (and, if *strict*,
    no warnings).

    Works on any Celery app. Silence a rule you accept with ``ignore=("PR015",)`` or the
    app's ``prioroute_check_ignore`` setting.

    Raises ``AssertionError`` whose message is the report.
    """
    __tracebackhide__ = True
    report = check(app, ignore=ignore)
    if report.exit_code(strict=strict):
        raise AssertionError("\n" + report.format())
