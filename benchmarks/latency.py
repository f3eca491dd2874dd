"""Critical-task start latency behind a backlog of low tasks, on real RabbitMQ and Redis.

For each broker and backlog size: publish N low tasks of 20 ms, start the workers, publish
20 critical tasks once the workers are busy, and measure how long each critical task waited
between publish and start. Baselines measured in the same run: the seed's config as
written, a queue per tier with one worker, and a hand-written single priority queue (the
expert's config). prioroute runs shared (one plain worker, ``-c 2``) and lanes (the
workers ``plan_workers`` gives: the low lane ``-c 2`` as in the baselines, plus one process
each for the critical and normal lanes).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks._workers import running

CONFIGS = ("seed", "queue-per-tier", "single-queue", "prioroute-shared", "prioroute-lanes")
BROKERS = ("rabbitmq", "redis")
BACKLOGS = (400, 2000)
CRITICAL = 20
BASELINE = "single-queue"
#: Runs per figure (the median run is kept); the seed's config, which waits for the whole
#: backlog, runs once.
REPEATS = 3


def measure(broker: str, config: str, backlog: int) -> dict[str, float]:
    """The median (by p50) of :data:`REPEATS` runs."""
    runs = [_once(broker, config, backlog) for _ in range(1 if config == "seed" else REPEATS)]
    return sorted(runs, key=lambda figures: figures["p50"])[len(runs) // 2]


def _once(broker: str, config: str, backlog: int) -> dict[str, float]:
    with running(broker, config) as run:
        app = run.module
        for number in range(backlog):
            app.low.delay(number, time.time())
        run.start_workers()
        run.wait_ready()
        run.wait(lambda lines: len(lines) >= 4, "the workers to be busy")
        for number in range(CRITICAL):
            app.critical.delay(number, time.time())
        lines = run.wait(
            lambda lines: sum(1 for line in lines if line[0] == "critical") >= CRITICAL,
            f"{CRITICAL} critical tasks to start",
        )
    waits = sorted(float(s) - float(p) for kind, _, p, s in lines if kind == "critical")
    return {
        "p50": statistics.median(waits),
        "p95": waits[int(0.95 * (len(waits) - 1))],
        "max": waits[-1],
    }


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for broker in BROKERS:
        for backlog in BACKLOGS:
            for config in CONFIGS:
                figures = measure(broker, config, backlog)
                results.setdefault(broker, {}).setdefault(str(backlog), {})[config] = figures
                print(
                    f"  latency {broker:8} N={backlog:<5} {config:17} p50 {figures['p50']:.3f} s",
                    flush=True,
                )
    return results


def table(result: dict[str, Any]) -> str:
    lines = [
        f"critical start latency behind N low tasks of 20 ms ({CRITICAL} critical tasks, "
        f"median of {REPEATS} runs; ratio = p50 / {BASELINE} p50 in the same run)",
        f"{'broker':9}{'config':18}"
        + "".join(f"{'p50 @' + n:>12}{'p95':>9}{'ratio':>8}" for n in map(str, BACKLOGS)),
    ]
    for broker, by_backlog in result.items():
        for config in CONFIGS:
            row = f"{broker:9}{config:18}"
            for backlog in map(str, BACKLOGS):
                figures = by_backlog[backlog][config]
                ratio = figures["p50"] / by_backlog[backlog][BASELINE]["p50"]
                row += f"{figures['p50']:>11.3f}s{figures['p95']:>8.3f}s{ratio:>8.2f}"
            lines.append(row)
    return "\n".join(lines)
