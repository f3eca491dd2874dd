"""The AnsFlow CI/CD platform's Celery plan, done right with prioroute.

The original plan (a Redis → RabbitMQ migration) sorted seven tasks into high, normal and
low priority by hand. As written it never prioritised anything: its second ``task_routes``
replaced the first, kombu dropped ``Queue(priority=...)``, and ``task_max_retries`` /
``task_default_retry_delay`` are not Celery settings. Here the same tasks are decorated with
a tier and ``prioroute.configure(app)`` writes the settings.

Queues: the five per-function queues of the plan (``pipeline_execution``, ``deployment``,
``configuration``, ``monitoring``, ``maintenance``) are gone on purpose. A worker that reads
several queues takes from them round-robin, so a deploy would still wait its turn behind
housekeeping. Every tier shares one priority queue, ``default``, which any plain
``celery -A examples.ansflow worker`` serves most urgent first. Cleanup keeps its own lane,
``cleanup``, so that a dedicated worker can grind through it without holding a slot a
deploy could use.

Importable with no broker running: nothing here connects.
"""

from __future__ import annotations

import os

from celery import Celery

import prioroute

app = Celery(
    "ansflow",
    broker=os.environ.get("ANSFLOW_BROKER_URL", "amqp://ansflow:ansflow@localhost:5672//"),
    backend=os.environ.get("ANSFLOW_RESULT_BACKEND", "redis://localhost:6379/0"),
)

#: The plan's retry policy (3 retries, 60 s apart) on every tier, for the errors a flaky
#: network raises (the plan's retries never happened: nothing called ``self.retry()``), and
#: a time limit per tier so a hung task cannot hold its message forever.
RETRY = prioroute.Retry(max_retries=3, delay=60, autoretry_for=(ConnectionError, TimeoutError))
TIME_LIMITS = {"critical": 1800, "normal": 900, "low": 3600}
registry = prioroute.Registry(
    [
        prioroute.Tier(t.name, t.urgency, retry=RETRY, time_limit=TIME_LIMITS[t.name])
        for t in prioroute.DEFAULT_TIERS.values()
    ]
)

app.conf.task_default_queue = "default"
prioroute.configure(app, registry)

from examples.ansflow import tasks  # noqa: E402  (registers the tasks; needs `app` above)

__all__ = ["app", "registry", "tasks"]
