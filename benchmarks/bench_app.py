"""The app the latency and throughput benchmarks run real workers for.

The environment picks the broker and the configuration under test:

``BENCH_BROKER``  broker URL
``BENCH_CONFIG``  ``seed``: the seed plan's config as written (routes overwritten by globs,
                  ``Queue(priority=...)``); ``single-queue``: what an expert writes by hand,
                  one priority queue (RabbitMQ numbering on RabbitMQ, Redis numbering with
                  ``priority_steps`` on Redis), prefetch 1, acks_late; ``queue-per-tier``: a
                  queue per tier, one worker consuming both; ``celery-defaults``: nothing set;
                  ``prioroute-shared`` / ``prioroute-lanes``: ``prioroute.configure``
``BENCH_QUEUE``   a name unique to the run (queues are derived from it)
``BENCH_LOG``     the file each task appends ``kind number published started`` to
"""

from __future__ import annotations

import os
import time

from celery import Celery
from kombu import Exchange, Queue

import prioroute

BROKER = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
CONFIG = os.environ.get("BENCH_CONFIG", "prioroute-shared")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
LOG = os.environ.get("BENCH_LOG", "bench.log")
REDIS = BROKER.startswith("redis")
# kombu's in-memory transport: publishing without a network, to isolate per-publish cost.

app = Celery("bench", broker=BROKER)
app.conf.broker_connection_retry_on_startup = True
registry = prioroute.Registry()


def _record(kind: str, number: int, published: float) -> None:
    started = time.time()
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"{kind} {number} {published:.6f} {started:.6f}\n")


@registry.low
@app.task(name="bench.low", shared=False)
def low(number: int, published: float, duration: float = 0.02) -> None:
    _record("low", number, published)
    if duration:
        time.sleep(duration)


@registry.critical
@app.task(name="bench.critical", shared=False)
def critical(number: int, published: float) -> None:
    _record("critical", number, published)


if CONFIG == "seed":
    # The seed's shape: exact routes replaced by glob routes that match nothing, queues
    # declared with Queue(priority=...), which kombu drops.
    app.conf.task_routes = {"bench.critical": {"queue": f"{QUEUE}-deploy"}}
    app.conf.task_default_queue = QUEUE
    app.conf.task_queues = (
        Queue(f"{QUEUE}-deploy", Exchange(f"{QUEUE}-ops"), routing_key="ops.deploy", priority=9),
        Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, priority=3),
    )
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_routes={"critical.*": {"queue": "critical"}, "low.*": {"queue": "low"}},
    )
elif CONFIG == "single-queue":
    app.conf.task_default_queue = QUEUE
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1
    if REDIS:
        app.conf.task_routes = {"bench.critical": {"priority": 0}, "bench.low": {"priority": 9}}
        app.conf.broker_transport_options = {"priority_steps": list(range(10))}
    else:
        app.conf.task_queues = (Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, max_priority=9),)
        app.conf.task_routes = {"bench.critical": {"priority": 9}, "bench.low": {"priority": 1}}
    if os.environ.get("BENCH_CONFIRM"):  # publisher confirms, as prioroute turns them on
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "confirm_publish": True,
        }
elif CONFIG == "queue-per-tier":
    app.conf.task_default_queue = f"{QUEUE}-low"
    app.conf.task_routes = {"bench.critical": {"queue": f"{QUEUE}-critical"}}
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1
elif CONFIG == "celery-defaults":
    app.conf.task_default_queue = QUEUE
elif CONFIG.startswith("prioroute"):
    prioroute.configure(app, registry, queue=QUEUE, topology=CONFIG.removeprefix("prioroute-"))
else:
    raise SystemExit(f"unknown BENCH_CONFIG {CONFIG!r}")


def worker_queues() -> list[list[str]]:
    """The ``-Q`` of each worker process this config runs, and its extra options."""
    if CONFIG.startswith("prioroute"):
        sizes = {"critical": 1, "normal": 1, "low": 2} if CONFIG.endswith("lanes") else 2
        plan = prioroute.plan_workers(app, sizes)
        return [w.argv("benchmarks.bench_app")[4:] for w in plan.workers]
    if CONFIG == "queue-per-tier":
        return [["-Q", f"{QUEUE}-critical,{QUEUE}-low", "-c", "2"]]
    if CONFIG == "seed":
        return [["-Q", f"{QUEUE}-deploy,{QUEUE}", "-c", "2"]]
    return [["-Q", QUEUE, "-c", "2"]]


if os.environ.get("BENCH_NO_WAIT_EVENTS"):
    from celery.signals import task_prerun

    task_prerun.disconnect(dispatch_uid="prioroute.report_wait")
