"""The app the integration tests run real workers for: a low and a critical task."""

from __future__ import annotations

import os
import time

from celery import Celery

import prioroute

QUEUE = os.environ.get("PRIOROUTE_IT_QUEUE", "prioroute-it")
LOG = os.environ.get("PRIOROUTE_IT_LOG", "prioroute-it.log")

app = Celery(
    "prio_it", broker=os.environ.get("PRIOROUTE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
)
app.conf.broker_connection_retry_on_startup = True
registry = prioroute.Registry()


def _record(kind: str, number: int) -> None:
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"{kind} {number}\n")


@registry.low
@app.task(name="it.low")
def low(number: int) -> None:
    _record("low", number)
    time.sleep(0.02)


@registry.critical
@app.task(name="it.critical")
def critical(number: int) -> None:
    _record("critical", number)


if os.environ.get("PRIOROUTE_IT_WITHOUT_PRIOROUTE"):
    # The control: what the tasks get without prioroute, one plain queue.
    app.conf.task_default_queue = QUEUE
    app.conf.task_routes = {"it.critical": {"priority": 9}}
    app.conf.worker_prefetch_multiplier = 1
else:
    prioroute.configure(app, registry, queue=QUEUE)
