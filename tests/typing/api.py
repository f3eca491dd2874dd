"""The public API as users write it; checked by `mypy --strict` (nox -s typing), never run."""

from __future__ import annotations

from celery import Celery

import prioroute
from prioroute import Registry, Retry, Settings, Tier
from prioroute.testing import assert_routes

app = Celery("typed")


@prioroute.critical
@app.task
def deploy(service: str) -> str:
    return service


@prioroute.low(queue="cleanup")
@app.task
def cleanup() -> None: ...


def plain(x: int) -> int:
    return x


same: int = prioroute.normal(plain)(3)
registry = Registry([Tier("page", 9, retry=Retry(max_retries=1)), Tier("bulk", 0, queue="bulk")])
registry.register("proj.tasks.nightly", "bulk")
settings: Settings = prioroute.configure(app, registry)
routes: dict[str, object] = dict(settings.task_routes)
assert_routes(app)
