"""``prioroute check``: find priority, routing and reliability mistakes in any Celery app.

Every rule reads the app's configuration and asks Celery's own router; none contacts a
broker. Rules that need the source (``Queue(priority=...)``, routes set twice) read the
modules that hold the app.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import itertools
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from celery import Celery, Task
from celery.app.defaults import DEFAULTS
from kombu import Queue
from kombu.utils.url import maybe_sanitize_url

from ._configure import configured_registry, layout_of, learn_task_names
from ._errors import PriorouteError
from ._profiles import scheme_of

__all__ = ["RULES", "Finding", "Report", "Rule", "check"]

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

#: kombu's default ``priority_steps`` on Redis (not imported: that needs the redis package).
REDIS_DEFAULT_STEPS = (0, 3, 6, 9)

#: Version of the JSON document ``Report.as_dict()`` returns.
SCHEMA_VERSION = 1


@attrs.frozen
class Rule:
    """One kind of mistake ``check`` finds.

    Attributes:
        id: Stable identifier, ``PR001`` … (never reused).
        name: A short slug.
        severity: ``error`` (it breaks at run time), ``warning`` (it likely does not do
            what was meant) or ``info`` (worth knowing).
        summary: One line.
    """

    id: str
    name: str
    severity: Severity
    summary: str


@attrs.frozen
class Finding:
    """One mistake in one place.

    Attributes:
        rule: The rule's id (``PR007``).
        severity: ``error``, ``warning`` or ``info``.
        subject: The task, queue or setting involved (``setting 'task_max_retries'``).
        problem: What goes wrong at run time, in one sentence.
        fix: What to do about it.
        location: ``file:line`` when the mistake was found in source, else ``None``.
    """

    rule: str
    severity: Severity
    subject: str
    problem: str
    fix: str
    location: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The finding as plain JSON-able data."""
        return attrs.asdict(self)


@attrs.frozen
class Report:
    """Everything ``check`` found in one app.

    Attributes:
        app: The app's main name.
        broker: The broker URL, password masked.
        findings: The findings, errors first.
        ignored: Rule ids that were silenced.
    """

    app: str
    broker: str
    findings: tuple[Finding, ...]
    ignored: tuple[str, ...] = ()

    def of(self, severity: Severity) -> tuple[Finding, ...]:
        """The findings of one severity."""
        return tuple(f for f in self.findings if f.severity == severity)

    @property
    def rules(self) -> frozenset[str]:
        """The ids of the rules that found something."""
        return frozenset(f.rule for f in self.findings)

    def exit_code(self, *, strict: bool = False) -> int:
        """0 clean (or warnings only), 1 warnings with *strict*, 2 errors."""
        if self.of("error"):
            return 2
        return 1 if strict and self.of("warning") else 0

    def as_dict(self) -> dict[str, Any]:
        """The report as the documented JSON document (schema version 1)."""
        return {
            "schema": SCHEMA_VERSION,
            "app": self.app,
            "broker": self.broker,
            "summary": {s: len(self.of(s)) for s in SEVERITIES},
            "ignored": list(self.ignored),
            "findings": [f.as_dict() for f in self.findings],
        }

    def format(self, *, width: int = 80, style: Callable[[str, str], str] | None = None) -> str:
        """The report for people, grouped by severity and wrapped at *width* columns.

        *style*, if given, colours a line: ``style(text, severity)``.
        """
        paint = style or (lambda text, _: text)
        lines = [f"prioroute check: app {self.app!r} on {self.broker}"]
        for severity in SEVERITIES:
            found = self.of(severity)
            if not found:
                continue
            lines += ["", paint(f"{severity.upper()}S ({len(found)})", severity)]
            for finding in found:
                head = f"{finding.rule} {finding.subject}"
                if finding.location:
                    head += f" ({finding.location})"
                lines.append(paint(head, severity))
                for label, text in (("", finding.problem), ("fix: ", finding.fix)):
                    lines += textwrap.wrap(
                        label + text,
                        width=width,
                        initial_indent="    ",
                        subsequent_indent="    " + " " * len(label),
                        break_on_hyphens=False,
                    )
        counts = ", ".join(f"{len(self.of(s))} {s}s" for s in SEVERITIES)
        lines += [
            "",
            f"{counts}" + (f"; ignored {', '.join(self.ignored)}" if self.ignored else ""),
        ]
        if not self.findings:
            lines[-1] = "no problems found; " + lines[-1]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# -- what the rules look at ---------------------------------------------------------------------


@attrs.define
class _Route:
    """Where one task is published: queue name and priority, or why it cannot be."""

    queue: str | None
    priority: int | None
    error: str | None = None


@attrs.define
class _Context:
    app: Celery
    tasks: Mapping[str, Task[Any, Any]]
    routes: dict[str, _Route]
    declared: list[Queue]
    scheme: str
    sources: list[Path]

    @property
    def conf(self) -> Any:
        return self.app.conf

    @property
    def own_tasks(self) -> dict[str, Task[Any, Any]]:
        """The app's tasks without Celery's built-ins."""
        return {n: t for n, t in self.tasks.items() if not n.startswith("celery.")}

    def queue(self, name: str | None) -> Queue | None:
        if name is None:
            return None
        for queue in self.declared:
            if queue.name == name:
                return queue
        return None

    def max_priority(self, name: str | None) -> int | None:
        queue = self.queue(name)
        if queue is None:
            return self.conf.task_queue_max_priority  # type: ignore[no-any-return]
        arguments = queue.queue_arguments or {}
        value = getattr(queue, "max_priority", None) or arguments.get("x-max-priority")
        return int(value) if value is not None else self.conf.task_queue_max_priority

    def prioritised(self) -> dict[str, int]:
        return {n: r.priority for n, r in self.routes.items() if r.priority is not None}

    @property
    def redis(self) -> bool:
        return self.scheme in {"redis", "rediss", "sentinel", "redis+socket"}

    @property
    def amqp(self) -> bool:
        return self.scheme in {"amqp", "amqps", "pyamqp", "librabbitmq"}


def _published(app: Celery, task: Task[Any, Any]) -> _Route:
    """The queue and priority *task* is published with: its options, then the route."""
    try:
        options = dict(task._get_exec_options())  # type: ignore[attr-defined]
        route = app.amqp.router.route(options, task.name, (), {})
    except Exception as exc:  # QueueNotFound and friends: exactly what rules report
        return _Route(None, None, f"{type(exc).__name__}: {exc}")
    # A route without a queue leaves it to the publisher, which uses the default queue.
    queue = route.get("queue") or app.conf.task_default_queue
    name = getattr(queue, "name", queue)
    return _Route(name if isinstance(name, str) else None, route.get("priority"))


def _declared(conf: Any) -> list[Queue]:
    queues = conf.task_queues
    if queues is None:
        return []
    if isinstance(queues, Mapping):
        return list(queues.values())
    return [q for q in queues if isinstance(q, Queue)]


def _sources(app: Celery) -> list[Path]:
    """The Python files of the modules that hold *app* as a global."""
    found = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        path = getattr(module, "__file__", None)
        if not namespace or not path or not path.endswith(".py"):
            continue
        if any(value is app for value in list(namespace.values())):
            found.append(Path(path))
    return sorted(set(found))


def _context(app: Celery) -> _Context:
    registry = configured_registry(app)
    if registry is not None:
        tasks = learn_task_names(app, registry)
    else:
        app.loader.import_default_modules()
        tasks = app.tasks
    routes = {name: _published(app, task) for name, task in sorted(tasks.items())}
    return _Context(
        app=app,
        tasks=tasks,
        routes=routes,
        declared=_declared(app.conf),
        scheme=scheme_of(app.conf.broker_url),
        sources=_sources(app),
    )


# -- rules --------------------------------------------------------------------------------------

_RuleFunction = Callable[[_Context], Iterator[Finding]]
_RULES: list[tuple[Rule, _RuleFunction]] = []


def _rule(
    id: str, name: str, severity: Severity, summary: str
) -> Callable[[_RuleFunction], _RuleFunction]:
    def register(function: _RuleFunction) -> _RuleFunction:
        _RULES.append((Rule(id, name, severity, summary), function))
        return function

    return register


def _route_entries(value: Any) -> Iterator[tuple[Any, Any]]:
    """(key, route) of every mapping in a task_routes setting."""
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, Mapping):
            yield from item.items()
        elif hasattr(item, "map") and hasattr(item, "patterns"):  # a MapRoute
            yield from item.map.items()
            yield from item.patterns.items()


def _matches(key: Any, name: str) -> bool:
    if isinstance(key, re.Pattern):
        return key.match(name) is not None
    if isinstance(key, str) and "*" in key:
        return fnmatch.fnmatchcase(name, key)
    return bool(key == name)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@_rule(
    "PR001",
    "route-matches-no-task",
    "warning",
    "a task_routes entry matches none of the app's tasks",
)
def _route_matches_nothing(ctx: _Context) -> Iterator[Finding]:
    names = list(ctx.own_tasks)
    if not names:
        return
    example = names[0]
    for key, _route in _route_entries(ctx.conf.task_routes):
        if any(_matches(key, name) for name in ctx.tasks):
            continue
        shown = key.pattern if isinstance(key, re.Pattern) else key
        if isinstance(key, str) and "*" not in key:
            problem = (
                f"no task is called {key!r}{_suggest(key, names)}, so this route is never used"
            )
        else:
            problem = (
                f"the pattern {shown!r} matches none of the app's {len(names)} tasks (task names "
                f"are full dotted names such as {example!r}), so the tasks it was meant for go "
                f"to the default queue {ctx.conf.task_default_queue!r} instead"
            )
        yield Finding(
            "PR001",
            "warning",
            f"route {shown!r}",
            problem,
            "match the full task name (e.g. 'myapp.tasks.*' or the exact name); "
            "with prioroute, decorate the task with its tier instead of writing routes",
        )


def _ast_calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _parse(path: Path) -> ast.AST | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _where(path: Path, node: ast.AST) -> str:
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    return f"{shown}:{getattr(node, 'lineno', 0)}"


@_rule(
    "PR002", "routes-set-twice", "error", "task_routes is set twice; the second replaces the first"
)
def _routes_set_twice(ctx: _Context) -> Iterator[Finding]:
    for path in ctx.sources:
        tree = _parse(path)
        if tree is None:
            continue
        sets: list[ast.AST] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    name = (
                        target.attr
                        if isinstance(target, ast.Attribute)
                        else getattr(target, "id", None)
                    )
                    if name in {"task_routes", "CELERY_TASK_ROUTES", "CELERY_ROUTES"}:
                        sets.append(node)
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "update"
                and any(k.arg == "task_routes" for k in node.keywords)
            ):
                sets.append(node)
        sets.sort(key=lambda n: getattr(n, "lineno", 0))
        for earlier, later in itertools.pairwise(sets):
            yield Finding(
                "PR002",
                "error",
                "setting 'task_routes'",
                f"task_routes is set at line {getattr(earlier, 'lineno', 0)} and again at line "
                f"{getattr(later, 'lineno', 0)}; the second replaces the whole first mapping, so "
                "every route of the first is lost and its tasks go to the default queue",
                "write all routes in one task_routes (a dict, or a tuple of dicts for several "
                "routers); with prioroute, decorate the tasks and call prioroute.configure(app)",
                _where(path, later),
            )


@_rule("PR003", "queue-priority-dropped", "error", "Queue(priority=...) is ignored by kombu")
def _queue_priority_dropped(ctx: _Context) -> Iterator[Finding]:
    for path in ctx.sources:
        tree = _parse(path)
        if tree is None:
            continue
        for call in _ast_calls(tree):
            callee = (
                call.func.attr
                if isinstance(call.func, ast.Attribute)
                else getattr(call.func, "id", "")
            )
            if callee != "Queue":
                continue
            keyword = next((k for k in call.keywords if k.arg == "priority"), None)
            if keyword is None:
                continue
            name = (
                call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else "?"
            )
            value = ast.unparse(keyword.value)
            yield Finding(
                "PR003",
                "error",
                f"queue {name!r}",
                f"kombu's Queue accepts priority={value} and drops it: the queue is declared "
                "without x-max-priority, so the broker ignores every message priority on it",
                f"declare it with max_priority={value} (or queue_arguments={{'x-max-priority': "
                f"{value}}}) on a new queue name — RabbitMQ refuses to change an existing "
                "queue's arguments; with prioroute, let configure() declare the queues",
                _where(path, call),
            )


@_rule(
    "PR004",
    "priority-without-priority-queue",
    "error",
    "tasks carry a priority into a queue without x-max-priority",
)
def _priority_without_queue(ctx: _Context) -> Iterator[Finding]:
    if not ctx.amqp:
        return
    by_queue: dict[str, list[str]] = {}
    for name, priority in ctx.prioritised().items():
        queue = ctx.routes[name].queue
        if (
            queue is not None
            and ctx.max_priority(queue) is None
            and not _is_quorum(ctx.queue(queue))
        ):
            by_queue.setdefault(queue, []).append(f"{name} ({priority})")
    for queue, tasks in sorted(by_queue.items()):
        yield Finding(
            "PR004",
            "error",
            f"queue {queue!r}",
            f"{_list(tasks)} are published with a priority into {queue!r}, which has no "
            "x-max-priority: RabbitMQ serves them in arrival order",
            f"declare {queue!r} with max_priority (a new queue name if it exists already), or "
            "set task_queue_max_priority for queues Celery creates",
        )


def _is_quorum(queue: Queue | None) -> bool:
    return queue is not None and (queue.queue_arguments or {}).get("x-queue-type") == "quorum"


@_rule(
    "PR005", "priority-above-maximum", "warning", "a priority is above its queue's x-max-priority"
)
def _priority_above_max(ctx: _Context) -> Iterator[Finding]:
    if not ctx.amqp:
        return
    for name, priority in sorted(ctx.prioritised().items()):
        queue = ctx.routes[name].queue
        maximum = ctx.max_priority(queue)
        if maximum is not None and priority > maximum:
            yield Finding(
                "PR005",
                "warning",
                f"task {name!r}",
                f"its priority {priority} is above the x-max-priority {maximum} of queue "
                f"{queue!r}; RabbitMQ treats it as {maximum}, the same as every task at the top",
                f"use priorities 0-{maximum} or declare the queue with a larger max_priority",
            )


@_rule(
    "PR006", "priority-ignored", "warning", "priorities on a broker or queue type that ignores them"
)
def _priority_ignored(ctx: _Context) -> Iterator[Finding]:
    prioritised = ctx.prioritised()
    if not prioritised:
        return
    for name in sorted(prioritised):
        queue = ctx.routes[name].queue
        if _is_quorum(ctx.queue(queue)):
            yield Finding(
                "PR006",
                "warning",
                f"task {name!r}",
                f"it is published with a priority into quorum queue {queue!r}; quorum queues "
                "on RabbitMQ 3.x ignore priorities, so it waits in arrival order",
                "give urgent tasks their own queue and workers (prioroute: "
                "configure(app, broker='rabbitmq-quorum') and plan_workers)",
            )
    if not ctx.amqp and not ctx.redis and ctx.scheme != "memory":
        yield Finding(
            "PR006",
            "warning",
            f"broker {ctx.scheme}://",
            f"{len(prioritised)} tasks carry a priority, but this transport has no message "
            "priority: every queue is served in arrival order",
            "separate urgent tasks into their own queues with dedicated workers "
            "(prioroute: topology='lanes' and plan_workers)",
        )


_IGNORED_NAMES = {"deprecated_settings"}

_RETRY_HINT = (
    "it is a task option, not a setting: @app.task({option}=...), or for every task "
    "task_annotations={{'*': {{'{option}': ...}}}}; with prioroute, "
    "Tier(..., retry=Retry({field}=...))"
)
_HINTS = {
    "task_max_retries": _RETRY_HINT.format(option="max_retries", field="max_retries"),
    "task_default_retry_delay": _RETRY_HINT.format(option="default_retry_delay", field="delay"),
    "task_retry_backoff": _RETRY_HINT.format(option="retry_backoff", field="backoff"),
    "task_autoretry_for": _RETRY_HINT.format(option="autoretry_for", field="autoretry_for"),
    "default_task_queue": "the setting is task_default_queue",
}


def _old_keys() -> frozenset[str]:
    from celery.app.defaults import _TO_NEW_KEY  # type: ignore[attr-defined]

    return frozenset(_TO_NEW_KEY)


@_rule(
    "PR007", "unknown-setting", "error", "a setting name Celery does not know (ignored silently)"
)
def _unknown_setting(ctx: _Context) -> Iterator[Finding]:
    namespace = getattr(ctx.app, "namespace", None)
    old = _old_keys()
    for key in sorted(map(str, ctx.conf.keys())):
        if key.startswith("_") or key in _IGNORED_NAMES or key.lower().startswith("prioroute_"):
            continue
        name = key
        if namespace:
            prefix = f"{namespace}_"
            if not key.startswith(prefix):
                continue  # e.g. Django's own settings
            name = key[len(prefix) :].lower()
        if name in DEFAULTS or key in old:
            continue
        hint = _HINTS.get(name.lower())
        if hint is None and key.isupper() and key.lower().removeprefix("celery_") in DEFAULTS:
            hint = f"new-style setting names are lower case: {key.lower().removeprefix('celery_')}"
        if hint is None:
            hint = "remove it" + _suggest(name, DEFAULTS).replace(" (", ", or ").rstrip(")")
        yield Finding(
            "PR007",
            "error",
            f"setting {key!r}",
            "Celery has no setting by this name and ignores it without a word, so what it "
            "was meant to do does not happen",
            hint,
        )


_GENERIC_OPTIONS = frozenset(
    {
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "polling_interval",
        "connect_timeout",
    }
)
_SENTINEL_ONLY = frozenset({"master_name", "sentinel_kwargs", "min_other_sentinels"})
_REDIS_OPTIONS = frozenset(
    {
        "visibility_timeout", "priority_steps", "sep", "queue_order_strategy", "fanout_prefix",
        "fanout_patterns", "global_keyprefix", "socket_timeout", "socket_connect_timeout",
        "socket_keepalive", "socket_keepalive_options", "max_connections", "health_check_interval",
        "retry_on_timeout", "client_name", "unacked_key", "unacked_index_key", "unacked_mutex_key",
        "unacked_mutex_expire", "unacked_restore_limit", "unacked_restore_interval",
        "unacked_restore_throttle", "ack_emulation", "brpop_timeout",
        "username", "password", "retry_policy", "ssl", "connection_class",
    }
)  # fmt: skip
_AMQP_OPTIONS = frozenset(
    {
        "confirm_publish",
        "read_timeout",
        "write_timeout",
        "client_properties",
        "login_method",
        "heartbeat",
        "ssl",
    }
)
_SQS_OPTIONS = frozenset(
    {
        "visibility_timeout", "region", "predefined_queues", "queue_name_prefix", "wait_time_seconds",
        "sts_role_arn", "sts_token_timeout", "is_secure", "port", "endpoint_url", "fetch_message_attributes",
        "client-config", "backoff_policy", "backoff_tasks",
    }
)  # fmt: skip
_TRANSPORT_OPTIONS = {
    "redis": _REDIS_OPTIONS,
    "sentinel": _REDIS_OPTIONS | _SENTINEL_ONLY,
    "amqp": _AMQP_OPTIONS,
    "sqs": _SQS_OPTIONS,
}
_ALL_OPTIONS = _REDIS_OPTIONS | _SENTINEL_ONLY | _AMQP_OPTIONS | _SQS_OPTIONS | _GENERIC_OPTIONS


def _family(scheme: str) -> str | None:
    if scheme in {"redis", "rediss", "redis+socket"}:
        return "redis"
    if scheme == "sentinel":
        return "sentinel"
    if scheme in {"amqp", "amqps", "pyamqp", "librabbitmq"}:
        return "amqp"
    if scheme in {"sqs", "https+sqs"}:
        return "sqs"
    return None


@_rule(
    "PR008",
    "transport-option-mismatch",
    "warning",
    "transport options for another transport, or misspelt",
)
def _transport_options(ctx: _Context) -> Iterator[Finding]:
    sets = [
        ("broker_transport_options", ctx.conf.broker_transport_options, ctx.scheme, "broker"),
        (
            "result_backend_transport_options",
            ctx.conf.result_backend_transport_options,
            scheme_of(ctx.conf.result_backend) if ctx.conf.result_backend else "",
            "result backend",
        ),
    ]
    for setting, options, scheme, role in sets:
        family = _family(scheme)
        if not options or family is None:
            continue
        known = _TRANSPORT_OPTIONS[family] | _GENERIC_OPTIONS
        for key in sorted(options):
            subject = f"setting {setting}[{key!r}]"
            if key in known:
                if role == "result backend" and key in {
                    "visibility_timeout",
                    "priority_steps",
                    "sep",
                    "queue_order_strategy",
                }:
                    yield Finding(
                        "PR008",
                        "warning",
                        subject,
                        f"{key} is read by the Redis *broker* transport; a result backend never "
                        "uses it, so it changes nothing here",
                        "move it to broker_transport_options if the broker is Redis, else remove it",
                    )
                continue
            if key in _SENTINEL_ONLY:
                problem = (
                    f"{key} is read only by the sentinel:// transport; with a {scheme}:// "
                    f"{role} URL it is ignored, so {role} connections do not go through Sentinel"
                )
                fix = f"use a sentinel://host:26379 URL for the {role}, or remove {key}"
            elif key in _ALL_OPTIONS:
                owners = sorted(f for f, opts in _TRANSPORT_OPTIONS.items() if key in opts)
                problem = (
                    f"{key} is an option of the {'/'.join(owners)} transport; the {role} is "
                    f"{scheme}://, which ignores it"
                )
                fix = "remove it, or set the option the transport you run reads"
            else:
                problem = f"no {scheme}:// transport option is called {key!r}; it is ignored"
                fix = "remove it" + _suggest(key, known).replace(" (", ", or ").rstrip(")")
            yield Finding("PR008", "warning", subject, problem, fix)


_URGENT_WORDS = re.compile(r"critical|urgent|high|deploy|pipeline|interactive|realtime|alert|page")
_LAZY_WORDS = re.compile(
    r"low|cleanup|clean_up|bulk|batch|background|housekeeping|archive|report|stat"
)


def _named_like(names: Iterable[str], words: re.Pattern[str]) -> list[str]:
    return [name for name in names if words.search(name.lower())]


def _redis_step(priority: int, steps: list[int]) -> int:
    clamped = max(0, min(9, priority))
    return max(s for s in steps if s <= clamped) if any(s <= clamped for s in steps) else steps[0]


@_rule(
    "PR009",
    "redis-priority-order",
    "error",
    "on Redis the tasks meant to be urgent are served last",
)
def _redis_order(ctx: _Context) -> Iterator[Finding]:
    if not ctx.redis:
        return
    prioritised = ctx.prioritised()
    if not prioritised:
        return
    steps = list(
        (ctx.conf.broker_transport_options or {}).get("priority_steps", REDIS_DEFAULT_STEPS)
    )
    layout = layout_of(ctx.app)
    if layout is not None and layout.profile.priority == "lower-first":
        return  # prioroute numbered them for Redis
    urgent, lazy = _named_like(prioritised, _URGENT_WORDS), _named_like(prioritised, _LAZY_WORDS)
    inverted = [(u, z) for u in urgent for z in lazy if prioritised[u] > prioritised[z]]
    if inverted:
        name, other = max(inverted, key=lambda pair: prioritised[pair[0]] - prioritised[pair[1]])
        yield Finding(
            "PR009",
            "error",
            f"task {name!r}",
            f"it has priority {prioritised[name]} and {other!r} has {prioritised[other]}, but "
            "Redis serves lower numbers first (0 is the most urgent), so it waits until "
            f"{other!r} and everything numbered like it are done — RabbitMQ's numbering, inverted",
            "on Redis give urgent tasks the lowest numbers (0 first) and set priority_steps; "
            "prioroute's redis profile numbers tiers for you",
        )
    elif len(set(prioritised.values())) > 1 and not (urgent and lazy):
        order = sorted(prioritised, key=prioritised.__getitem__)
        yield Finding(
            "PR009",
            "info",
            f"{len(prioritised)} prioritised tasks",
            f"on Redis lower numbers are served first, so {order[0]!r} "
            f"({prioritised[order[0]]}) goes before {order[-1]!r} ({prioritised[order[-1]]}) — "
            "the reverse of RabbitMQ",
            "check that the lowest numbers belong to the most urgent tasks",
        )
    unprioritised = [n for n in ctx.own_tasks if n not in prioritised]
    if unprioritised and any(_redis_step(p, steps) > 0 for p in prioritised.values()):
        yield Finding(
            "PR009",
            "warning",
            f"{len(unprioritised)} tasks without a priority",
            f"on Redis a message without priority counts as 0, the most urgent step, so "
            f"{_list(unprioritised[:3])} are served before every prioritised task",
            "give every task a priority (a '*' route with the least urgent number), or use "
            "prioroute, which routes unregistered tasks at the least urgent step",
        )


@_rule(
    "PR010",
    "redis-priority-steps",
    "warning",
    "distinct Redis priorities that share one priority step",
)
def _redis_steps(ctx: _Context) -> Iterator[Finding]:
    if not ctx.redis:
        return
    options = ctx.conf.broker_transport_options or {}
    steps = list(options.get("priority_steps", REDIS_DEFAULT_STEPS))
    used = sorted(set(ctx.prioritised().values()))
    by_step: dict[int, list[int]] = {}
    for priority in used:
        by_step.setdefault(_redis_step(priority, steps), []).append(priority)
    for step, priorities in sorted(by_step.items()):
        clamped = [p for p in priorities if p > 9 or p < 0]
        if len(priorities) > 1 or clamped:
            yield Finding(
                "PR010",
                "warning",
                "setting broker_transport_options['priority_steps']",
                f"priorities {_list(map(str, priorities))} all land in Redis priority step {step} "
                f"(steps {steps}; values outside 0-9 are clamped), so they are served in "
                "arrival order, not by priority",
                "set priority_steps to list(range(10)) (or one step per priority you use), the "
                "same in producers and workers",
            )


def _retry_wait(task: Task[Any, Any]) -> float:
    delay = float(task.default_retry_delay or 0)
    if getattr(task, "retry_backoff", False):
        delay = max(delay, float(getattr(task, "retry_backoff_max", 600) or 0))
    return max(delay, float(task.time_limit or 0))


@_rule(
    "PR011",
    "visibility-timeout-too-short",
    "error",
    "acks_late tasks can outlast the visibility timeout",
)
def _visibility_timeout(ctx: _Context) -> Iterator[Finding]:
    if not (ctx.redis or ctx.scheme in {"sqs", "https+sqs"}):
        return
    timeout = (ctx.conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    for name, task in sorted(ctx.own_tasks.items()):
        wait = _retry_wait(task)
        if task.acks_late and wait > timeout:
            yield Finding(
                "PR011",
                "error",
                f"task {name!r}",
                f"its retry delay or time limit ({wait:g} s) is longer than the visibility "
                f"timeout ({timeout} s): the broker hands the unacknowledged message to another "
                "worker meanwhile, so the task runs twice",
                f"raise broker_transport_options['visibility_timeout'] above {wait:g} s",
            )


def _acks_late_tasks(ctx: _Context) -> list[str]:
    return sorted(n for n, t in ctx.own_tasks.items() if t.acks_late)


@_rule(
    "PR012",
    "acks-late-without-reject",
    "warning",
    "acks_late without reject_on_worker_lost loses tasks of killed workers",
)
def _acks_late_without_reject(ctx: _Context) -> Iterator[Finding]:
    names = [n for n in _acks_late_tasks(ctx) if not ctx.own_tasks[n].reject_on_worker_lost]
    if names:
        yield Finding(
            "PR012",
            "warning",
            f"{len(names)} acks_late tasks",
            f"{_list(names)} acknowledge late but not on a lost worker: when a worker process "
            "is killed (the OOM killer, a segfault) the task is marked failed and acknowledged, "
            "so it is lost instead of redelivered",
            "set task_reject_on_worker_lost=True (with a time_limit, so a task that always "
            "crashes its worker is not redelivered forever); prioroute's tiers do both",
        )
    useless = sorted(
        n for n, t in ctx.own_tasks.items() if t.reject_on_worker_lost and not t.acks_late
    )
    if useless:
        yield Finding(
            "PR012",
            "info",
            f"{len(useless)} tasks",
            f"{_list(useless)} set reject_on_worker_lost without acks_late, where it does nothing",
            "set task_acks_late=True too, or drop reject_on_worker_lost",
        )


@_rule(
    "PR013",
    "prefetch-with-priorities",
    "warning",
    "worker_prefetch_multiplier > 1 while priorities are used",
)
def _prefetch(ctx: _Context) -> Iterator[Finding]:
    multiplier = ctx.conf.worker_prefetch_multiplier
    if ctx.prioritised() and multiplier and multiplier > 1 and not ctx.conf.worker_disable_prefetch:
        yield Finding(
            "PR013",
            "warning",
            "setting 'worker_prefetch_multiplier'",
            f"each worker process reserves {multiplier} messages; priority only reorders what "
            "waits in the broker, so an urgent task waits behind the ones already reserved",
            "set worker_prefetch_multiplier=1 (and task_acks_late=True)",
        )


@_rule("PR014", "pickle-accepted", "warning", "pickle is accepted or used")
def _pickle(ctx: _Context) -> Iterator[Finding]:
    conf = ctx.conf
    used = [
        s
        for s in ("task_serializer", "result_serializer", "accept_content", "result_accept_content")
        if "pickle" in (conf.get(s) or ()) or conf.get(s) == "pickle"
    ]
    if used:
        yield Finding(
            "PR014",
            "warning",
            f"setting {used[0]!r}",
            "a worker that accepts pickle runs any code a message carries; anyone who can "
            "publish to the broker can run code on your workers",
            "use JSON: task_serializer='json', result_serializer='json', accept_content=['json']",
        )


@_rule("PR015", "acks-late-without-time-limit", "info", "acks_late tasks with no time limit")
def _no_time_limit(ctx: _Context) -> Iterator[Finding]:
    names = [n for n in _acks_late_tasks(ctx) if not ctx.own_tasks[n].time_limit]
    if names:
        yield Finding(
            "PR015",
            "info",
            f"{len(names)} acks_late tasks",
            f"{_list(names)} have no time_limit: one that hangs holds its message and its "
            "worker slot forever",
            "set time_limit on the task (prioroute: Tier(..., time_limit=...)) or task_time_limit",
        )


@_rule(
    "PR016",
    "route-to-undeclared-queue",
    "error",
    "a route names a queue that is not declared while task_create_missing_queues is off",
)
def _undeclared(ctx: _Context) -> Iterator[Finding]:
    for name, route in sorted(ctx.routes.items()):
        if route.error is not None and not name.startswith("celery."):
            yield Finding(
                "PR016",
                "error",
                f"task {name!r}",
                f"Celery cannot route it ({route.error}): calling it raises instead of publishing",
                "declare the queue in task_queues, or set task_create_missing_queues=True",
            )


@_rule("PR017", "default-queue-undeclared", "warning", "task_default_queue is not in task_queues")
def _default_queue(ctx: _Context) -> Iterator[Finding]:
    default = ctx.conf.task_default_queue
    if ctx.declared and ctx.queue(default) is None:
        missing = not ctx.conf.task_create_missing_queues
        yield Finding(
            "PR017",
            "error" if missing else "warning",
            f"queue {default!r}",
            (
                "task_default_queue is not declared in task_queues and task_create_missing_queues "
                "is off: every task without a route fails to publish (KeyError)"
                if missing
                else "task_default_queue is not declared in task_queues, so Celery creates it on "
                "the fly, without x-max-priority; workers started with -Q for the declared "
                "queues never read it"
            ),
            f"add Queue({default!r}, ...) to task_queues",
        )


@_rule(
    "PR018",
    "queue-declared-twice",
    "error",
    "one queue name declared twice with different arguments",
)
def _declared_twice(ctx: _Context) -> Iterator[Finding]:
    seen: dict[str, Queue] = {}
    for queue in ctx.declared:
        first = seen.setdefault(queue.name, queue)
        if first is not queue and _queue_shape(first) != _queue_shape(queue):
            yield Finding(
                "PR018",
                "error",
                f"queue {queue.name!r}",
                f"it is declared twice in task_queues with different arguments "
                f"({_queue_shape(first)} and {_queue_shape(queue)}); the broker refuses the "
                "second declaration (PRECONDITION_FAILED) and closes the channel",
                "declare each queue once",
            )


def _queue_shape(queue: Queue) -> dict[str, Any]:
    arguments = dict(queue.queue_arguments or {})
    if getattr(queue, "max_priority", None) is not None:
        arguments["x-max-priority"] = queue.max_priority  # type: ignore[attr-defined]
    return {"exchange": getattr(queue.exchange, "name", None), "arguments": arguments}


@_rule("PR019", "queue-without-tasks", "info", "a declared queue that no task is routed to")
def _unused_queue(ctx: _Context) -> Iterator[Finding]:
    used = {r.queue for r in ctx.routes.values()}
    for queue in ctx.declared:
        if queue.name not in used and queue.name != ctx.conf.task_default_queue:
            yield Finding(
                "PR019",
                "info",
                f"queue {queue.name!r}",
                "it is declared but no task of this app is routed to it; a worker consuming "
                "only this queue idles",
                "route the tasks meant for it there (check the route names), or remove it",
            )


def _calls_retry(task: Task[Any, Any]) -> bool | None:
    """Whether the task's code calls ``.retry(``; ``None`` if the source is not available."""
    import inspect

    function = getattr(task, "__wrapped__", None) or getattr(type(task), "run", None)
    try:
        source = inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return ".retry(" in source


@_rule("PR020", "retry-never-happens", "info", "retry options on a task that never retries")
def _retries(ctx: _Context) -> Iterator[Finding]:
    from celery.app.task import Task as BaseTask

    names = []
    for name, task in sorted(ctx.own_tasks.items()):
        configured = (
            task.max_retries != BaseTask.max_retries
            or task.default_retry_delay != BaseTask.default_retry_delay
        )
        if configured and not getattr(task, "autoretry_for", ()) and _calls_retry(task) is False:
            names.append(name)
    if names:
        yield Finding(
            "PR020",
            "info",
            f"{len(names)} tasks",
            f"{_list(names)} set max_retries or default_retry_delay but neither call "
            "self.retry() nor set autoretry_for, so they never retry",
            "set autoretry_for=(SomeError,) (prioroute: Retry(autoretry_for=...)) or call "
            "self.retry() where a retry makes sense",
        )


@_rule(
    "PR021",
    "default-priority-shadows-routes",
    "error",
    "task_default_priority beats route priorities",
)
def _default_priority(ctx: _Context) -> Iterator[Finding]:
    default = ctx.conf.task_default_priority
    if default is None:
        return
    shadowed = []
    for key, route in _route_entries(ctx.conf.task_routes):
        if isinstance(route, Mapping) and route.get("priority") not in (None, default):
            shadowed.append(str(getattr(key, "pattern", key)))
    if shadowed:
        yield Finding(
            "PR021",
            "error",
            "setting 'task_default_priority'",
            f"Celery copies task_default_priority ({default}) into every task, and a task's own "
            f"priority beats its route's when it is published: the priorities of routes "
            f"{_list(shadowed)} are never used",
            "remove task_default_priority (give unrouted tasks a priority with a '*' route)",
        )


_ROUTING_ATTRIBUTES = ("queue", "priority", "routing_key", "exchange")


@_rule("PR022", "routing-task-attributes", "warning", "queue/priority set as task options")
def _routing_attributes(ctx: _Context) -> Iterator[Finding]:
    default = ctx.conf.task_default_priority
    for name, task in sorted(ctx.own_tasks.items()):
        own = {
            a: type(task).__dict__[a]
            for a in _ROUTING_ATTRIBUTES
            if type(task).__dict__.get(a) is not None
            and not (a == "priority" and type(task).__dict__[a] == default)
        }
        if own:
            given = ", ".join(f"{k}={v!r}" for k, v in own.items())
            yield Finding(
                "PR022",
                "warning",
                f"task {name!r}",
                f"it sets {given} as task options, which beat task_routes when it is published "
                "and are deprecated for Celery 6",
                "move them into task_routes (prioroute: decorate the task with its tier)",
            )


@_rule(
    "PR023",
    "parent-priority-not-inherited",
    "info",
    "priorities used without task_inherit_parent_priority",
)
def _inherit(ctx: _Context) -> Iterator[Finding]:
    if ctx.prioritised() and not ctx.conf.task_inherit_parent_priority:
        yield Finding(
            "PR023",
            "info",
            "setting 'task_inherit_parent_priority'",
            "the children of a chain, chord or group lose their parent's priority and fall "
            "back to the default (on Redis: 0, the most urgent)",
            "set task_inherit_parent_priority=True",
        )


@_rule(
    "PR024",
    "router-disagrees-with-registry",
    "error",
    "Celery routes a prioroute task elsewhere than its tier",
)
def _registry_agrees(ctx: _Context) -> Iterator[Finding]:
    registry, layout = configured_registry(ctx.app), layout_of(ctx.app)
    if registry is None or layout is None:
        return
    for registration in registry.registrations():
        route = ctx.routes.get(registration.task)
        if route is None:
            yield Finding(
                "PR024",
                "error",
                f"task {registration.task!r}",
                f"it is registered in tier {registration.tier!r} but the app has no such task, "
                "so nothing is routed",
                "register the name Celery gives the task, or import the module that defines it",
            )
            continue
        want = layout.route(registration)
        got = {"queue": route.queue, "priority": route.priority}
        if got != {"queue": want["queue"], "priority": want.get("priority")}:
            yield Finding(
                "PR024",
                "error",
                f"task {registration.task!r}",
                f"its tier {registration.tier!r} sends it to {want}, but Celery publishes it "
                f"with {got}",
                "remove the task option or route that overrides the tier",
            )


def _list(items: Iterable[str]) -> str:
    shown = list(items)
    text = ", ".join(shown[:5])
    return text + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


#: Every rule ``check`` runs, by id.
RULES: Mapping[str, Rule] = {rule.id: rule for rule, _ in _RULES}


def check(app: Celery, *, ignore: Iterable[str] = ()) -> Report:
    """Check *app* for priority, routing and reliability mistakes, without a broker.

    Works on any Celery app, configured by prioroute or not. Imports the app's task modules
    (as a worker would) to see every task.

    Args:
        app: The Celery app.
        ignore: Rule ids to silence, in addition to the app's own
            ``prioroute_check_ignore`` setting.

    Raises:
        PriorouteError: An ignored id is not a rule.

    >>> from celery import Celery
    >>> app = Celery("proj", broker="amqp://", set_as_current=False)
    >>> app.conf.task_max_retries = 3
    >>> report = check(app)
    >>> [f.subject for f in report.findings if f.rule == "PR007"]
    ["setting 'task_max_retries'"]
    >>> report.exit_code()
    2
    """
    if not isinstance(app, Celery):
        raise PriorouteError(f"check() takes a Celery app, got {app!r}")
    silenced = {*ignore, *(app.conf.get("prioroute_check_ignore") or ())}
    unknown = sorted(silenced - set(RULES))
    if unknown:
        raise PriorouteError(
            f"cannot ignore {', '.join(map(repr, unknown))}: no such rule; rules are "
            f"{min(RULES)}-{max(RULES)} (see `prioroute check --list-rules`)"
        )
    ctx = _context(app)
    findings = [
        finding for rule, function in _RULES if rule.id not in silenced for finding in function(ctx)
    ]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f.severity], f.rule))
    return Report(
        app=str(app.main),
        broker=maybe_sanitize_url(app.conf.broker_url or ""),
        findings=tuple(findings),
        ignored=tuple(sorted(silenced)),
    )
