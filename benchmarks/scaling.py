"""Scaling of build/configure and of routing one task, from 10 to 100,000 registered tasks.

Baselines measured in the same run:
- build + configure: a hand-written config of the same size (a dict of exact-name routes
  and one priority queue assigned to ``app.conf``), which is the least any tool can do;
- routing: Celery's own router over that hand-written exact-name dict.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Queue

import prioroute

SIZES = (10, 1_000, 10_000, 100_000)
ROUTE_CALLS = 20_000


def _best(function: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def _names(size: int) -> list[str]:
    return [f"proj.module{i % 97}.task_{i}" for i in range(size)]


def _prioroute_configure(size: int) -> Celery:
    registry = prioroute.Registry()
    tiers = list(registry.tiers)
    for i, name in enumerate(_names(size)):
        registry.register(name, tiers[i % len(tiers)])
    app = Celery("bench", broker="memory://", set_as_current=False)
    prioroute.configure(app, registry)
    return app


def _hand_written(size: int) -> Celery:
    app = Celery("bench", broker="memory://", set_as_current=False)
    app.conf.task_routes = {
        n: {"queue": "q", "priority": i % 3} for i, n in enumerate(_names(size))
    }
    app.conf.task_queues = (Queue("q", max_priority=2),)
    app.conf.task_default_queue = "q"
    return app


def _route_cost(app: Celery, names: list[str]) -> float:
    router = app.amqp.router
    sample = [names[(i * 7919) % len(names)] for i in range(ROUTE_CALLS)]

    def run() -> None:
        for name in sample:
            router.route({}, name)

    return _best(run, 3) / ROUTE_CALLS


def run() -> dict[str, Any]:
    rows = []
    for size in SIZES:
        repeat = 5 if size <= 1_000 else 3 if size <= 10_000 else 1
        ours = _best(lambda size=size: _prioroute_configure(size), repeat)
        base = _best(lambda size=size: _hand_written(size), repeat)
        names = _names(size)
        route_ours = _route_cost(_prioroute_configure(size), names)
        route_base = _route_cost(_hand_written(size), names)
        rows.append(
            {
                "tasks": size,
                "configure_ms": ours * 1e3,
                "hand_written_ms": base * 1e3,
                "configure_ratio": ours / base,
                "route_us": route_ours * 1e6,
                "route_hand_written_us": route_base * 1e6,
                "route_ratio": route_ours / route_base,
            }
        )
    growth = rows[-1]["configure_ms"] / rows[-2]["configure_ms"] / (SIZES[-1] / SIZES[-2])
    flat = rows[-1]["route_us"] / rows[0]["route_us"]
    at_10k = next(r for r in rows if r["tasks"] == 10_000)
    return {
        "scenario": "scaling",
        "rows": rows,
        "configure_growth_vs_linear": growth,
        "route_cost_10k_vs_10": flat,
        "targets": {
            "configure_10k_under_100ms": at_10k["configure_ms"] < 100,
            "route_cost_flat": flat < 1.5,
        },
        "route_cost_median_us": statistics.median(r["route_us"] for r in rows),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "scaling: build + configure, and routing one task (best of several runs)",
        f"{'tasks':>7} {'configure':>11} {'hand-written':>13} {'ratio':>6} "
        f"{'route':>9} {'hand-written':>13} {'ratio':>6}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['tasks']:>7,} {r['configure_ms']:>9.2f}ms {r['hand_written_ms']:>11.2f}ms "
            f"{r['configure_ratio']:>6.2f} {r['route_us']:>7.2f}µs {r['route_hand_written_us']:>11.2f}µs "
            f"{r['route_ratio']:>6.2f}"
        )
    lines.append(
        f"configure growth 10k→100k relative to linear: "
        f"{result['configure_growth_vs_linear']:.2f}; "
        f"route cost at 100k vs 10 tasks: {result['route_cost_10k_vs_10']:.2f}"
    )
    lines.append(f"targets: {result['targets']}")
    return "\n".join(lines)
