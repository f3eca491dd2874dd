"""The ``prioroute`` command line."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from ._check import RULES, check
from ._configure import configured_registry, layout_of, learn_task_names
from ._dead import DeadLetter, dead_letters, requeue_dead
from ._errors import MigrationError, PriorouteError
from ._migrate import Migration, migrate, recreate_queue
from ._operate import BrokerUnreachable, QueueState, masked, probe_queues, watch
from ._plan import Worker, WorkerPlan, plan_workers

__all__ = ["celery_command", "load_app", "main"]

EXIT_APP_NOT_LOADED = 3


class AppLoadError(click.ClickException):
    """The app could not be imported; shown plainly, exit code 3."""

    exit_code = EXIT_APP_NOT_LOADED


def load_app(spec: str) -> Celery:
    """Import the Celery app named *spec*: ``module:attribute``, or ``module`` holding one app.

    The current directory is importable, as it is for ``celery -A``.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise AppLoadError(f"cannot import {module_name!r}: {detail}") from None
    if attribute:
        app = getattr(module, attribute, None)
        if not isinstance(app, Celery):
            raise AppLoadError(f"{module_name!r} has no Celery app called {attribute!r}")
        return app
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, Celery):
            return candidate
    found = [n for n, v in vars(module).items() if isinstance(v, Celery)]
    if len(found) == 1:
        return getattr(module, found[0])  # type: ignore[no-any-return]
    raise AppLoadError(
        f"{module_name!r} holds {len(found)} Celery apps ({', '.join(found) or 'none'}); "
        f"name one: {module_name}:NAME"
    )


def routing_table(app: Celery) -> dict[str, Any]:
    """What ``prioroute show`` prints, as data: every registered task as Celery routes it."""
    registry = configured_registry(app)
    layout = layout_of(app)
    if registry is None or layout is None:
        raise click.ClickException(
            f"app {app.main!r} was not configured by prioroute; call prioroute.configure(app) "
            "where the app is created"
        )
    tasks = learn_task_names(app, registry)
    router = app.amqp.router
    rows: list[dict[str, Any]] = []
    for registration in registry.registrations():
        route = router.route({}, registration.task)
        queue = route.get("queue")
        tier = layout.tiers[registration.tier]
        rows.append(
            {
                "task": registration.task,
                "tier": registration.tier,
                "urgency": tier.urgency,
                "queue": getattr(queue, "name", queue),
                "exchange": getattr(getattr(queue, "exchange", None), "name", None),
                "routing_key": getattr(queue, "routing_key", None),
                "priority": route.get("priority"),
                "known_to_celery": registration.task in tasks,
                "policy": {k: _plain(v) for k, v in tier.task_options().items()},
            }
        )
    rows.sort(key=lambda r: (-r["urgency"], r["queue"] or "", r["task"]))
    queues = [
        {
            "name": q.name,
            "max_priority": getattr(q, "max_priority", None),
            "type": (q.queue_arguments or {}).get("x-queue-type", "classic"),
            "exchange": getattr(q.exchange, "name", None),
            "exchange_type": getattr(q.exchange, "type", None),
            "routing_key": q.routing_key,
        }
        for q in app.amqp.queues.values()
    ]
    order = {
        "higher-first": "higher number = sooner",
        "lower-first": "lower number = sooner",
        None: "no message priority: tiers are kept apart by queues",
    }[layout.profile.priority]
    default = layout.default_route() or {"queue": layout.shared_queue, "priority": None}
    return {
        "app": app.main,
        "broker": maybe_sanitize_url(app.conf.broker_url or ""),
        "profile": layout.profile.name,
        "topology": layout.topology,
        "priority_order": order,
        "shared_queue": layout.shared_queue,
        "unregistered_tasks": default,
        "queues": queues,
        "tasks": rows,
        "notes": list(layout.notes()),
    }


def _queue_text(queue: dict[str, Any]) -> str:
    kind = (
        f"x-max-priority {queue['max_priority']}"
        if queue["max_priority"] is not None
        else queue["type"]
    )
    if (queue["exchange"], queue["routing_key"]) != (queue["name"], queue["name"]):
        kind += f"; exchange {queue['exchange']!r}, routing key {queue['routing_key']!r}"
    return f"{queue['name']} ({kind})"


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [v.__qualname__ if isinstance(v, type) else v for v in value]
    return value


def _retry_text(policy: dict[str, Any]) -> str:
    retries = policy.get("max_retries")
    text = "∞" if retries is None else str(retries)
    return f"{text} x {policy['default_retry_delay']:g}s"


def _table(data: dict[str, Any]) -> str:
    header = ("TIER", "PRIORITY", "QUEUE", "TASK", "RETRIES")
    rows = [
        (r["tier"], str(r["priority"]), r["queue"], r["task"], _retry_text(r["policy"]))
        for r in data["tasks"]
    ]
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(header)
    ]
    lines = [
        f"app {data['app']} · broker {data['broker']} · profile {data['profile']} · "
        f"topology {data['topology']}",
        f"priority: {data['priority_order']}",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    default = data["unregistered_tasks"]
    unregistered = (
        f"tasks not registered with prioroute go to {default['queue']!r} at priority "
        f"{default['priority']} (as urgent as the least urgent tier)"
        if default["priority"] is not None
        else f"tasks not registered with prioroute go to {default['queue']!r} (no priorities "
        "on this broker)"
    )
    lines += [
        "",
        f"queues (most urgent first): {', '.join(map(_queue_text, data['queues']))}",
        unregistered,
    ]
    lines += [f"note: {note}" for note in data["notes"]]
    missing = [r["task"] for r in data["tasks"] if not r["known_to_celery"]]
    if missing:
        lines.append(f"warning: registered but unknown to Celery: {', '.join(missing)}")
    return "\n".join(lines)


@click.group()
@click.version_option(package_name="prioroute")
@click.option(
    "-A",
    "--app",
    "app_option",
    metavar="APP",
    help="The Celery app (module:attribute), as `celery -A` takes it; or give it after the command.",
)
@click.pass_context
def main(ctx: click.Context, app_option: str | None) -> None:
    """prioroute: Celery task priorities that actually work."""
    ctx.obj = _Options(app_option)


@attrs.frozen
class _Options:
    app: str | None


def _app_from(ctx: click.Context, spec: str | None) -> Celery:
    """The app: given to the command, to ``prioroute -A``, or by ``celery -A`` when prioroute
    runs as a Celery subcommand."""
    if spec:
        return load_app(spec)
    root = ctx.find_root().obj
    if isinstance(root, _Options) and root.app:
        return load_app(root.app)
    app = getattr(root, "app", None)
    if isinstance(app, Celery):
        return app
    raise _UsageError("missing APP: give it after the command or as -A (e.g. -A proj.celery:app)")


def _app_path(ctx: click.Context, spec: str | None, app: Celery) -> str:
    """What ``celery -A`` should import: as given to us, or to ``celery -A``."""
    root = ctx.find_root()
    given = root.obj.app if isinstance(root.obj, _Options) else root.params.get("app")
    return spec or (given if isinstance(given, str) and given else None) or app.main


_F = TypeVar("_F", bound=Callable[..., Any])


def _format_option(*choices: str, help: str = "Output format.") -> Callable[[_F], _F]:
    """The ``--format`` option every command has; the first choice is the default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help=help,
    )


#: The APP argument; optional because ``-A`` or ``celery -A`` may give it instead.
_app_argument = click.argument("app_spec", metavar="APP", required=False)
_timeout_option = click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="Seconds to connect."
)


@main.command()
@_app_argument
@_format_option("table", "json")
@click.pass_context
def show(ctx: click.Context, app_spec: str | None, fmt: str) -> None:
    """Print the routing table of APP (module:app): tier, queue, priority, retries per task.

    Needs no broker: it asks Celery's own router where each registered task goes.
    """
    data = routing_table(_app_from(ctx, app_spec))
    click.echo(json.dumps(data, indent=2) if fmt == "json" else _table(data))


_COLOURS = {"error": "red", "warning": "yellow", "info": "cyan"}
EXIT_USAGE = 4


class _UsageError(click.UsageError):
    """Bad usage of ``check``: exit code 4, since 1-3 report findings or a broken app."""

    exit_code = EXIT_USAGE


class _CheckCommand(click.Command):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _UsageError(exc.message, exc.ctx) from None


def _usage(message: str) -> click.UsageError:
    return _UsageError(message)


@main.command(name="check", cls=_CheckCommand)
@_app_argument
@_format_option("text", "json", help="Output format; json is for CI (schema in the docs).")
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings (and no errors).")
@click.option(
    "--ignore",
    "ignore",
    multiple=True,
    metavar="RULE",
    help="Silence a rule, e.g. --ignore PR015 (repeatable; comma-separated also works).",
)
@click.option("--list-rules", is_flag=True, help="List every rule and exit.")
@click.pass_context
def check_command(
    ctx: click.Context,
    *,
    app_spec: str | None,
    fmt: str,
    strict: bool,
    ignore: tuple[str, ...],
    list_rules: bool,
) -> None:
    """Find priority, routing and reliability mistakes in APP (module:app), without a broker.

    Works on any Celery app, with or without prioroute. Exit codes: 0 no errors (or only
    warnings without --strict), 1 warnings with --strict, 2 errors, 3 APP could not be
    loaded, 4 bad usage.
    """
    if list_rules:
        for rule in RULES.values():
            click.echo(f"{rule.id}  {rule.severity:<7}  {rule.name}: {rule.summary}")
        return
    app = _app_from(ctx, app_spec)
    ignored = [part.strip().upper() for item in ignore for part in item.split(",") if part.strip()]
    try:
        report = check(app, ignore=ignored)
    except PriorouteError as exc:
        raise _usage(str(exc)) from None
    except Exception as exc:  # importing the app's task modules failed
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise AppLoadError(f"cannot load the tasks of {app_spec!r}: {detail}") from None
    if fmt == "json":
        data = report.as_dict()
        data["exit_code"] = report.exit_code(strict=strict)
        click.echo(json.dumps(data, indent=2))
    else:
        width = min(100, max(60, shutil.get_terminal_size((80, 24)).columns))
        click.echo(report.format(width=width, style=lambda t, s: click.style(t, fg=_COLOURS[s])))
    sys.exit(report.exit_code(strict=strict))


def _why(worker: Worker, plan: WorkerPlan, shared_queue: str) -> str:
    tiers = ", ".join(worker.tiers)
    held = f"tiers {tiers}" if len(worker.tiers) > 1 else f"tier {tiers}"
    parts = [f"{held} on {worker.queues[0]!r}"]
    if shared_queue in worker.queues[1:]:
        parts.append(f"plus {shared_queue!r}, the default queue for tasks no tier names")
    if worker.prefetch_multiplier == 1:
        parts.append("prefetch 1: it serves more than one urgency, so it never reserves tasks")
    else:
        parts.append(
            f"prefetch {worker.prefetch_multiplier}: all its tasks are equally urgent, so "
            "reserving a few raises throughput"
        )
    return "; ".join(parts)


def _lanes(values: tuple[str, ...]) -> dict[str, int]:
    spec: dict[str, int] = {}
    for value in values:
        name, _, size = value.partition("=")
        if not name or not size.isdigit():
            raise _usage(f"--lane takes QUEUE_OR_TIER=N (e.g. --lane critical=4), got {value!r}")
        spec[name] = int(size)
    return spec


@main.command()
@_app_argument
@click.option(
    "-c", "--concurrency", type=click.IntRange(min=1), help="Total processes over all workers."
)
@click.option(
    "--lane",
    "lanes",
    multiple=True,
    metavar="NAME=N",
    help="Processes for one worker, by queue or tier name (repeat for each).",
)
@click.option("--app-path", help="What `celery -A` should import (default: APP).")
@_format_option(
    "text", "json", help="text: commands to paste; json: a list for systemd/supervisor templates."
)
@click.pass_context
def workers(
    ctx: click.Context,
    *,
    app_spec: str | None,
    concurrency: int | None,
    lanes: tuple[str, ...],
    app_path: str | None,
    fmt: str,
) -> None:
    """Print the `celery worker` command lines that serve APP's queues, one per worker.

    Give a total (-c 8; default 2 per worker) or each worker's size (--lane critical=4).
    Needs no broker.
    """
    app = _app_from(ctx, app_spec)
    if concurrency is not None and lanes:
        raise _usage("give either --concurrency or --lane, not both")
    layout = layout_of(app)
    try:
        spec: int | dict[str, int]
        if lanes:
            spec = _lanes(lanes)
        elif concurrency is not None:
            spec = concurrency
        else:
            spec = 2 * len(plan_workers(app, 10**6, app_path="x").workers)
        plan = plan_workers(app, spec, app_path=app_path or _app_path(ctx, app_spec, app))
    except PriorouteError as exc:
        raise click.ClickException(str(exc)) from None
    assert layout is not None  # plan_workers raised otherwise
    if fmt == "json":
        rows = [
            {
                **attrs.asdict(worker),
                "argv": worker.argv(plan.app),
                "command": command,
                "why": _why(worker, plan, layout.shared_queue),
            }
            for worker, command in zip(plan.workers, plan.commands(), strict=True)
        ]
        click.echo(
            json.dumps({"app": plan.app, "topology": plan.topology, "workers": rows}, indent=2)
        )
        return
    lines = [f"# {len(plan.workers)} workers for {plan.app} (topology {plan.topology})"]
    for worker, command in zip(plan.workers, plan.commands(), strict=True):
        lines += [f"# {_why(worker, plan, layout.shared_queue)}", command]
    click.echo("\n".join(lines))


EXIT_VERIFY = {"ok": 0, "idle": 1, "missing": 1, "mismatch": 2}


def _verify_fix(state: QueueState) -> str:
    if state.status == "mismatch":
        return (
            f"{state.name!r} exists with other arguments, so workers fail to declare it. "
            "Give prioroute a new queue name (configure(app, queue=...)) and let the old "
            "queue drain, or delete it once it is empty (rabbitmqctl delete_queue "
            f"{state.name})"
        )
    if state.status == "missing":
        return "no worker has declared it yet: start the workers (`prioroute workers`)"
    return "no worker consumes it, so its tasks wait forever: start one (`prioroute workers`)"


@main.command()
@_app_argument
@_format_option("text", "json")
@_timeout_option
@click.pass_context
def verify(ctx: click.Context, app_spec: str | None, fmt: str, timeout: float) -> None:
    """Check the live broker against APP's queues: exist, same arguments, consumed.

    Never creates or changes anything. Exit codes: 0 all good, 1 a queue is missing or has
    no consumer, 2 a queue exists with other arguments, 3 the app or the broker cannot be
    reached.
    """
    app = _app_from(ctx, app_spec)
    try:
        states = probe_queues(app, timeout=timeout)
    except BrokerUnreachable as exc:
        raise AppLoadError(str(exc)) from None
    code = max((EXIT_VERIFY[s.status] for s in states), default=0)
    if fmt == "json":
        data = {
            "app": app.main,
            "broker": masked(app),
            "queues": [s.as_dict() for s in states],
            "exit_code": code,
        }
        click.echo(json.dumps(data, indent=2))
        sys.exit(code)
    header = ("QUEUE", "TIERS", "STATUS", "DEPTH", "CONSUMERS")
    rows = [
        (
            s.name,
            ",".join(s.tiers) or "-",
            s.status,
            "-" if s.depth is None else str(s.depth),
            "?" if s.consumers is None else str(s.consumers),
        )
        for s in states
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [f"app {app.main} · broker {masked(app)}", ""]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    for state in states:
        if state.status != "ok":
            lines += ["", f"{state.status}: queue {state.name!r}"]
            if state.mismatch:
                lines.append(f"    the broker says: {state.mismatch}")
            lines.append(f"    fix: {_verify_fix(state)}")
    colour = {0: "green", 1: "yellow", 2: "red"}[code]
    click.echo("\n".join(lines))
    click.secho("ok" if code == 0 else f"problems found (exit {code})", fg=colour)
    sys.exit(code)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _monitor_text(snapshot: dict[str, Any]) -> str:
    lines = [f"every {snapshot['interval']:.1f} s · {time.strftime('%H:%M:%S')}", ""]
    lines.append(f"{'TIER':<16}{'STARTED/S':>10}{'WAIT P50':>12}{'WAIT P95':>12}")
    for tier in snapshot["tiers"]:
        lines.append(
            f"{tier['tier']:<16}{tier['rate']:>10.1f}{_ms(tier['p50']):>12}{_ms(tier['p95']):>12}"
        )
    lines += ["", f"{'QUEUE':<28}{'DEPTH':>8}{'CONSUMERS':>11}{'IN/S':>8}{'OUT/S':>8}  TIERS"]
    for queue in snapshot["queues"]:
        depth = "-" if queue["depth"] is None else str(queue["depth"])
        consumers = "?" if queue["consumers"] is None else str(queue["consumers"])
        published = "-" if queue["publish_rate"] is None else f"{queue['publish_rate']:.1f}"
        lines.append(
            f"{queue['name']:<28}{depth:>8}{consumers:>11}{published:>8}"
            f"{queue['deliver_rate']:>8.1f}  {','.join(queue['tiers']) or '-'}"
        )
    return "\n".join(lines)


@main.command()
@_app_argument
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True)
@click.option("--once", is_flag=True, help="Print one interval and exit.")
@_format_option("text", "json", help="json: one line per interval.")
@click.pass_context
def monitor(
    ctx: click.Context, *, app_spec: str | None, interval: float, once: bool, fmt: str
) -> None:
    """Watch APP's tiers live: queue depth, consumers, rates, and how long each tier's
    tasks wait between publish and start (p50/p95). Ctrl-C to stop.

    Waits come from the workers, which report them when they run prioroute 0.1 or later.
    """
    app = _app_from(ctx, app_spec)
    refresh = fmt == "text" and sys.stdout.isatty() and not once
    try:
        for snapshot in watch(app, interval=interval):
            if fmt == "json":
                click.echo(json.dumps(snapshot))
            else:
                if refresh:
                    click.clear()
                click.echo(_monitor_text(snapshot))
            if once:
                return
    except BrokerUnreachable as exc:
        raise AppLoadError(str(exc)) from None
    except PriorouteError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        return


def _dead_text(letters: list[DeadLetter]) -> str:
    lines = []
    for letter in letters:
        lines += [
            f"{letter.task_id}  {letter.task}({letter.args})",
            f"    in {letter.queue}"
            + (f" since {letter.dead_at}" if letter.dead_at else "")
            + f"; back to {letter.routing_key!r} on requeue",
            f"    {letter.reason}",
        ]
    return "\n".join(lines)


@main.command()
@_app_argument
@click.option(
    "--requeue",
    "task_ids",
    multiple=True,
    metavar="TASK_ID",
    help="Publish this dead-lettered task to its queue again (repeatable).",
)
@click.option("--requeue-all", is_flag=True, help="Publish every dead-lettered task again.")
@_format_option("text", "json")
@_timeout_option
@click.pass_context
def dead(
    ctx: click.Context,
    *,
    app_spec: str | None,
    task_ids: tuple[str, ...],
    requeue_all: bool,
    fmt: str,
    timeout: float,
) -> None:
    """List the tasks in APP's dead-letter queues, or requeue them.

    A task lands in ``<queue>.dead`` when its worker process died on each of its tier's
    ``max_deliveries``. Listing changes nothing. Requeued tasks go back to the queue they
    came from with a fresh delivery count. Exit codes: 0 no dead letters (or all asked for
    were requeued), 1 dead letters wait (or a TASK_ID was not found), 3 the app or the
    broker cannot be reached.
    """
    app = _app_from(ctx, app_spec)
    if task_ids and requeue_all:
        raise _usage("give --requeue TASK_ID or --requeue-all, not both")
    try:
        if task_ids or requeue_all:
            letters = requeue_dead(app, None if requeue_all else set(task_ids), timeout=timeout)
            missing = sorted(set(task_ids) - {letter.task_id for letter in letters})
        else:
            letters, missing = dead_letters(app, timeout=timeout), []
    except BrokerUnreachable as exc:
        raise AppLoadError(str(exc)) from None
    requeueing = bool(task_ids or requeue_all)
    code = 1 if missing or (letters and not requeueing) else 0
    if fmt == "json":
        data = {
            "app": app.main,
            "broker": masked(app),
            "requeued" if requeueing else "dead_letters": [x.as_dict() for x in letters],
            "not_found": missing,
            "exit_code": code,
        }
        click.echo(json.dumps(data, indent=2))
        sys.exit(code)
    if requeueing:
        click.echo(f"requeued {len(letters)} task(s)")
    elif not letters:
        click.echo(f"no dead letters (app {app.main} · broker {masked(app)})")
    if letters:
        click.echo(_dead_text(letters))
    for task_id in missing:
        click.secho(f"no dead letter with task id {task_id!r}", fg="red", err=True)
    sys.exit(code)


def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


def _migration_text(result: Migration) -> str:
    verb = "would move" if result.dry_run else "moved"
    lines = [
        f"{verb} {result.total} task(s) from {result.source} to {result.destination} "
        f"in {result.seconds:.1f} s"
        + (f" ({result.total / result.seconds:.0f}/s)" if result.seconds and result.total else "")
    ]
    if result.recovered:
        lines.append(f"  published {result.recovered} left in flight by an interrupted run")
    lines += [f"  to {queue}: {count}" for queue, count in sorted(result.moved.items())]
    lines += [f"  tier {tier}: {count}" for tier, count in sorted(result.tiers.items())]
    lines += [f"  left in the source, {why}: {n}" for why, n in sorted(result.left.items())]
    lines += [
        f"  NOT MOVED, {why}: {n} (still in the source)"
        for why, n in sorted(result.unplaceable.items())
    ]
    return "\n".join(lines)


@main.command(name="migrate")
@_app_argument
@click.option("--from", "source", metavar="URL", help="The broker to move tasks from.")
@click.option(
    "--to",
    "destination",
    metavar="URL",
    help="The broker to move them to (default: APP's broker_url). APP must be configured "
    "for this broker.",
)
@click.option("--tiers", metavar="T1,T2", help="Move only these tiers' tasks.")
@click.option("--queues", metavar="Q1,Q2", help="Source queues (default: APP's and 'celery').")
@click.option("--limit", type=click.IntRange(min=1), help="Move at most this many tasks.")
@click.option("--dry-run", is_flag=True, help="Count what would move where; change nothing.")
@click.option(
    "--recreate",
    metavar="QUEUE",
    help="RabbitMQ: recreate APP's queue QUEUE with prioroute's arguments, keeping its tasks.",
)
@_format_option("text", "json")
@_timeout_option
@click.pass_context
def migrate_command(
    ctx: click.Context,
    *,
    app_spec: str | None,
    source: str | None,
    destination: str | None,
    tiers: str | None,
    queues: str | None,
    limit: int | None,
    dry_run: bool,
    recreate: str | None,
    fmt: str,
    timeout: float,
) -> None:
    """Move waiting tasks to where APP's routing sends them, losing none.

    Each task is re-routed by name — queue and priority as APP's prioroute configuration
    gives them on the destination broker — published with confirms, and only then removed
    from the source. Run it again after an interruption: it continues, and at most the
    task in flight arrives twice. Tasks it cannot place stay in the source and are
    reported. Exit codes: 0 done, 1 some tasks could not be placed, 3 the app or a broker
    cannot be reached, 4 bad usage.
    """
    app = _app_from(ctx, app_spec)
    if recreate and (source or destination or tiers or queues or limit or dry_run):
        raise _usage("--recreate QUEUE takes no other migrate option")
    if not recreate and not source:
        raise _usage("give --from URL (the broker to move tasks from), or --recreate QUEUE")
    tty = fmt == "text" and sys.stdout.isatty()
    started = time.monotonic()

    def progress(count: int) -> None:
        if tty and count % 100 == 0:
            rate = count / max(time.monotonic() - started, 1e-6)
            click.echo(f"\r  moved {count} ({rate:.0f}/s)", nl=False)

    try:
        if recreate:
            result = recreate_queue(app, recreate, timeout=timeout)
        else:
            assert source is not None
            result = migrate(
                app,
                source,
                destination=destination,
                tiers=_names(tiers),
                queues=_names(queues),
                limit=limit,
                dry_run=dry_run,
                progress=progress,
                timeout=timeout,
            )
    except MigrationError as exc:
        raise AppLoadError(str(exc)) from None
    if tty:
        click.echo("\r", nl=False)
    code = 1 if result.unplaceable else 0
    if fmt == "json":
        click.echo(json.dumps({**result.as_dict(), "exit_code": code}, indent=2))
    else:
        click.echo(_migration_text(result))
    sys.exit(code)


#: ``celery -A proj prioroute …``: the same commands, with the app Celery loaded.
celery_command = click.Group(
    "prioroute",
    commands=main.commands,
    help="prioroute: show, check, plan, verify and monitor Celery task priorities.",
)
