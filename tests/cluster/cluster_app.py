"""The app the cluster fault test runs real workers for: three tiers of 20 ms tasks on
quorum-queue lanes of a three-node RabbitMQ cluster (``scripts/cluster up``).

The environment chooses:

``PRIOROUTE_CLUSTER_URL``    the broker URL: by default the failover list of the three
                             nodes, ``amqp://guest:guest@127.0.0.1:5701//;...:5703//``
``PRIOROUTE_CLUSTER_QUEUE``  the shared queue's name (the lanes are ``<name>.<tier>``),
                             unique per test
``PRIOROUTE_CLUSTER_LOG``    the file each task appends ``done-<tier> N`` to when it ends
"""

from __future__ import annotations

import os
import time

from celery import Celery

import prioroute

PORTS = (5701, 5702, 5703)
URL = ";".join(f"amqp://guest:guest@127.0.0.1:{port}//" for port in PORTS)
QUEUE = os.environ.get("PRIOROUTE_CLUSTER_QUEUE", "prioroute-cluster")
LOG = os.environ.get("PRIOROUTE_CLUSTER_LOG", "prioroute-cluster.log")

app = Celery("prio_cluster", broker=os.environ.get("PRIOROUTE_CLUSTER_URL", URL))
registry = prioroute.Registry()


def _work(tier: str, number: int, duration: float) -> None:
    time.sleep(duration)
    with open(LOG, "a", encoding="utf-8") as log:  # at the end: the task completed
        log.write(f"done-{tier} {number}\n")


@registry.critical
@app.task(name="cluster.work.critical")
def work_critical(number: int, duration: float = 0.02) -> None:
    _work("critical", number, duration)


@registry.normal
@app.task(name="cluster.work.normal")
def work_normal(number: int, duration: float = 0.02) -> None:
    _work("normal", number, duration)


@registry.low
@app.task(name="cluster.work.low")
def work_low(number: int, duration: float = 0.02) -> None:
    _work("low", number, duration)


prioroute.configure(app, registry, broker="rabbitmq-quorum", queue=QUEUE)
