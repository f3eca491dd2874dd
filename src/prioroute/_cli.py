"""The ``prioroute`` command line."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import traceback
from typing import Any

import click
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from ._check import RULES, check
from ._configure import configured_registry, layout_of, learn_task_names
from ._errors import PriorouteError

__all__ = ["load_app", "main"]

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
        }
        for q in app.amqp.queues.values()
    ]
    default = layout.default_route() or {"queue": layout.shared_queue, "priority": None}
    return {
        "app": app.main,
        "broker": maybe_sanitize_url(app.conf.broker_url or ""),
        "profile": layout.profile.name,
        "topology": layout.topology,
        "shared_queue": layout.shared_queue,
        "unregistered_tasks": default,
        "queues": queues,
        "tasks": rows,
        "notes": list(layout.notes()),
    }


def _queue_text(queue: dict[str, Any]) -> str:
    if queue["max_priority"] is not None:
        return f"{queue['name']} (x-max-priority {queue['max_priority']})"
    return f"{queue['name']} ({queue['type']})"


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
def main() -> None:
    """prioroute: Celery task priorities that actually work."""


@main.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def show(app_spec: str, fmt: str) -> None:
    """Print the routing table of APP (module:app): tier, queue, priority, retries per task.

    Needs no broker: it asks Celery's own router where each registered task goes.
    """
    data = routing_table(load_app(app_spec))
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
@click.argument("app_spec", metavar="APP", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format; json is for CI (schema in the docs).",
)
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings (and no errors).")
@click.option(
    "--ignore",
    "ignore",
    multiple=True,
    metavar="RULE",
    help="Silence a rule, e.g. --ignore PR015 (repeatable; comma-separated also works).",
)
@click.option("--list-rules", is_flag=True, help="List every rule and exit.")
def check_command(
    app_spec: str | None, fmt: str, strict: bool, ignore: tuple[str, ...], list_rules: bool
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
    if app_spec is None:
        raise _usage("missing APP (e.g. proj.celery:app); see --help")
    app = load_app(app_spec)
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
