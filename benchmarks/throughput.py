"""Throughput of short (no-op) tasks on one worker pool of 2 processes.

Baseline measured in the same run: Celery's defaults (prefetch 4, early acknowledgement).
prioroute shared runs prefetch 1 with acks_late (the price of strict priority and of
redelivery on worker loss); prioroute lanes runs the low lane as ``plan_workers`` plans it
(acks_late, prefetch 4, since a lane holds one urgency).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._workers import running

CONFIGS = ("celery-defaults", "prioroute-shared", "prioroute-lanes")
BROKERS = ("rabbitmq", "redis")
TASKS = 3000
BASELINE = "celery-defaults"


def measure(broker: str, config: str) -> float:
    """Tasks started per second, from the first start to the last."""
    with running(broker, config) as run:
        for number in range(TASKS):
            run.module.low.delay(number, time.time(), 0)
        run.start_workers()
        lines = run.wait(lambda lines: len(lines) >= TASKS, f"{TASKS} tasks to start")
    starts = sorted(float(line[3]) for line in lines)
    return (len(starts) - 1) / (starts[-1] - starts[0])


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for broker in BROKERS:
        for config in CONFIGS:
            rate = measure(broker, config)
            results.setdefault(broker, {})[config] = rate
            print(f"  throughput {broker:8} {config:17} {rate:8.0f} tasks/s", flush=True)
    return results


def table(result: dict[str, Any]) -> str:
    lines = [
        f"throughput of {TASKS} no-op tasks, one pool of 2 processes "
        f"(ratio = rate / {BASELINE} in the same run)",
        f"{'broker':9}{'config':18}{'tasks/s':>10}{'ratio':>8}",
    ]
    for broker, rates in result.items():
        for config in CONFIGS:
            ratio = rates[config] / rates[BASELINE]
            lines.append(f"{broker:9}{config:18}{rates[config]:>10.0f}{ratio:>8.2f}")
    return "\n".join(lines)
