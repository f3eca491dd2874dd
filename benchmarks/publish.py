"""Publish overhead: ``apply_async`` calls per second with and without prioroute.

Baseline measured in the same run: the hand-written single priority queue with publisher
confirms turned on too (prioroute turns them on; they are a reliability choice, not a cost
of prioroute's routing). What prioroute adds to each publish — its router, its default
route, the ``prioroute_published_at`` stamp — shows as the ratio. ``memory`` publishes
without a network, where that per-publish cost is the largest share.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks._workers import running

BROKERS = ("memory", "rabbitmq", "redis")
CONFIGS = ("single-queue", "prioroute-shared")
BASELINE = "single-queue"
PUBLISHES = 2000
ROUNDS = 5


def measure(broker: str, config: str) -> float:
    """Best rate over a few rounds, in publishes per second."""
    os.environ["BENCH_CONFIRM"] = "1"
    try:
        with running(broker, config) as run:
            task = run.module.low
            task.delay(0, 0.0)  # connect and declare before timing
            best = 0.0
            for _ in range(ROUNDS):
                start = time.perf_counter()
                for number in range(PUBLISHES):
                    task.delay(number, 0.0)
                best = max(best, PUBLISHES / (time.perf_counter() - start))
            return best
    finally:
        os.environ.pop("BENCH_CONFIRM", None)


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    # Interleave the configs so that drift on a shared machine hits both alike.
    for broker in BROKERS:
        for config in CONFIGS:
            rate = measure(broker, config)
            results.setdefault(broker, {})[config] = rate
            print(f"  publish {broker:8} {config:17} {rate:8.0f} /s", flush=True)
    return results


def table(result: dict[str, Any]) -> str:
    lines = [
        f"apply_async rate, best of {ROUNDS} rounds of {PUBLISHES} "
        f"(overhead = 1 - rate / {BASELINE} rate in the same run)",
        f"{'broker':9}{'config':18}{'publishes/s':>12}{'overhead':>10}",
    ]
    for broker, rates in result.items():
        for config in CONFIGS:
            overhead = 1 - rates[config] / rates[BASELINE]
            lines.append(f"{broker:9}{config:18}{rates[config]:>12.0f}{overhead:>10.1%}")
    return "\n".join(lines)
