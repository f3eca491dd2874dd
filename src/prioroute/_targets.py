"""Telling which Celery task a decorated object is, without creating or binding it.

``@app.task`` returns a lazy ``PromiseProxy`` and ``@shared_task`` a ``Proxy``. Touching
any attribute of either (even ``.name``) creates the task and binds it, copying the app's
configuration *as it is at that moment* into the task. prioroute's decorators run at import
time, before ``configure()``, so they must learn the task's name and function without
touching the proxy. This module is the one place that knows how Celery's proxies keep them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from celery import Task
from celery.local import PromiseProxy, Proxy
from celery.utils.imports import gen_task_name

from ._errors import RegistrationError

__all__ = ["Target", "identify", "task_function"]


@attrs.frozen
class Target:
    """What a registration refers to: a task name, its function, or both."""

    name: str | None
    function: Callable[..., Any] | None


def _proxy_field(proxy: object, field: str) -> Any:
    return object.__getattribute__(proxy, f"_Proxy__{field}")


def _from_promise(proxy: PromiseProxy[Any]) -> Target | None:
    if proxy.__evaluated__():
        return Target(str(proxy.name), None)  # type: ignore[attr-defined]
    local = _proxy_field(proxy, "local")
    args, kwargs = _proxy_field(proxy, "args"), _proxy_field(proxy, "kwargs")
    app = getattr(local, "__self__", None)
    if getattr(local, "__name__", None) != "_task_from_fun" or not args or app is None:
        return None
    fun = args[0]
    name = kwargs.get("name") or app.gen_task_name(fun.__name__, fun.__module__)
    return Target(str(name), fun)


def _from_shared(proxy: Proxy[Any]) -> Target | None:
    local = _proxy_field(proxy, "local")
    cells = dict(zip(local.__code__.co_freevars, local.__closure__ or (), strict=False))
    if "fun" not in cells:
        return None
    fun = cells["fun"].cell_contents
    name = cells["name"].cell_contents if "name" in cells else None
    if name is None and fun.__module__ != "__main__":
        # Celery's default naming; an app that overrides gen_task_name is still matched by
        # the function when the task is bound.
        name = gen_task_name(None, fun.__name__, fun.__module__)
    return Target(name, fun)


def identify(target: object) -> Target:
    """Return the task name and/or function *target* stands for, without evaluating proxies."""
    kind = type(target)  # never isinstance(): a proxy's __class__ evaluates it
    found: Target | None
    if kind is str:
        found = Target(str(target), None) if target else None
    elif issubclass(kind, PromiseProxy):
        found = _from_promise(target)  # type: ignore[arg-type]
    elif issubclass(kind, Proxy):
        found = _from_shared(target)  # type: ignore[arg-type]
    elif issubclass(kind, Task):
        found = Target(str(target.name), None)  # type: ignore[attr-defined]
    elif isinstance(target, type) and issubclass(target, Task) and target.name:
        found = Target(str(target.name), None)
    elif callable(target) and hasattr(target, "__code__"):
        found = Target(None, target)
    else:
        found = None
    if found is None:
        raise RegistrationError(
            f"cannot tell which Celery task {object.__repr__(target)} is; decorate the function, the "
            "@app.task / @shared_task object or a Task class, or register it by name: "
            "prioroute.register('proj.tasks.name', 'low')"
        )
    return found


def task_function(task_class: type[Task[Any, Any]]) -> Callable[..., Any] | None:
    """The function a decorator-made Celery task class runs (``None`` for Task classes)."""
    for attr in ("_decorated_fun", "run"):
        value = task_class.__dict__.get(attr)
        if isinstance(value, staticmethod):
            value = value.__func__
        if value is not None and hasattr(value, "__code__"):
            return value
    return None
