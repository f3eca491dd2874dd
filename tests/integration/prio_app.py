"""The app the integration tests run real workers for: a low and a critical task.

The environment chooses the broker and how the app is configured:

``PRIOROUTE_IT_BROKER``    the broker URL
``PRIOROUTE_IT_MODE``      ``prioroute`` (default); ``plain``: one plain queue with a route
                           priority for the critical task, as users write by hand;
                           ``rabbitmq-numbering``: hand-written RabbitMQ-style priorities
                           (critical 9, low 1) with Redis's default priority steps
``PRIOROUTE_IT_PROFILE``   prioroute's broker profile (default: from the URL)
``PRIOROUTE_IT_TOPOLOGY``  ``shared`` or ``lanes`` (default: the profile's)
``PRIOROUTE_IT_QUEUE``     the shared queue's name, unique per test
``PRIOROUTE_IT_LOG``       the file each task appends its start to
``PRIOROUTE_IT_TIERS``     ``bounded``: the default tiers with a 5 s time limit and a 1 s
                           retry delay, and on Redis a 10 s visibility timeout, so that a
                           dead worker's tasks come back within seconds
"""

from __future__ import annotations

import os
import time

import attrs
from celery import Celery

import prioroute

QUEUE = os.environ.get("PRIOROUTE_IT_QUEUE", "prioroute-it")
LOG = os.environ.get("PRIOROUTE_IT_LOG", "prioroute-it.log")
MODE = os.environ.get("PRIOROUTE_IT_MODE", "prioroute")

app = Celery(
    "prio_it", broker=os.environ.get("PRIOROUTE_IT_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
)
app.conf.broker_connection_retry_on_startup = True
registry = prioroute.Registry()
if os.environ.get("PRIOROUTE_IT_TIERS") == "bounded":
    registry = prioroute.Registry(
        attrs.evolve(tier, time_limit=5, retry=prioroute.Retry(delay=1))
        for tier in prioroute.DEFAULT_TIERS.values()
    )
    if app.conf.broker_url.startswith("redis"):
        app.conf.broker_transport_options = {"visibility_timeout": 10}


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


def _work(tier: str, number: int, duration: float) -> None:
    time.sleep(duration)
    _record(f"done-{tier}", number)  # recorded at the end: the task completed


@registry.critical
@app.task(name="it.work.critical")
def work_critical(number: int, duration: float = 0.02) -> None:
    _work("critical", number, duration)


@registry.normal
@app.task(name="it.work.normal")
def work_normal(number: int, duration: float = 0.02) -> None:
    _work("normal", number, duration)


@registry.low
@app.task(name="it.work.low")
def work_low(number: int, duration: float = 0.02) -> None:
    _work("low", number, duration)


@registry.critical
@app.task(name="it.poison")
def poison(number: int) -> None:
    """Kills the worker process that runs it, as an OOM kill or a segfault would."""
    _record("poison", number)
    os._exit(13)


if MODE == "plain":
    app.conf.task_default_queue = QUEUE
    app.conf.task_routes = {"it.critical": {"priority": 9}}
    app.conf.worker_prefetch_multiplier = 1
elif MODE == "rabbitmq-numbering":
    app.conf.task_default_queue = QUEUE
    app.conf.task_routes = {"it.critical": {"priority": 9}, "it.low": {"priority": 1}}
    app.conf.worker_prefetch_multiplier = 1
    app.conf.task_acks_late = True
    app.conf.broker_transport_options = {"queue_order_strategy": "priority"}
else:
    prioroute.configure(
        app,
        registry,
        queue=QUEUE,
        broker=os.environ.get("PRIOROUTE_IT_PROFILE") or None,
        topology=os.environ.get("PRIOROUTE_IT_TOPOLOGY") or None,
    )
