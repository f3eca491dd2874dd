"""Run benchmark scenarios: ``python -m benchmarks [scenario ...]``.

Prints each scenario's table with ratios against baselines measured in the same run, and
writes ``benchmarks/results/latest.json``, ``latest.md`` and (with matplotlib installed)
``docs/_static/latency.png``. The latency, throughput and publish scenarios need RabbitMQ
and Redis on 127.0.0.1 (``scripts/brokers up``); they start and stop their own workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import celery
import kombu

from benchmarks import latency, publish, scaling, throughput

SCENARIOS = {
    "latency": latency,
    "throughput": throughput,
    "publish": publish,
    "scaling": scaling,
}
RESULTS = Path("benchmarks/results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write results")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    machine = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    latest = args.out / "latest.json"
    # Running some scenarios keeps the others' latest figures (each with its own date).
    previous = json.loads(latest.read_text()) if args.scenarios and latest.exists() else {}
    scenarios: dict[str, Any] = dict(previous.get("scenarios", {}))
    dates: dict[str, str] = dict(previous.get("dates", {}))
    for name in args.scenarios or list(SCENARIOS):
        module = SCENARIOS[name]
        print(f"{name}: running", flush=True)
        scenarios[name] = module.run()
        dates[name] = str(machine["date"])
        print(module.table(scenarios[name]), "\n", flush=True)
    results = {"machine": machine, "dates": dates, "scenarios": scenarios}
    args.out.mkdir(parents=True, exist_ok=True)
    latest.write_text(json.dumps(results, indent=2))
    header = ", ".join(f"{k} {v}" for k, v in machine.items() if k != "date")
    body = "\n\n".join(
        f"```text\n{SCENARIOS[name].table(result)}\n```\n\n"
        f"(`nox -s bench -- {name}`, {dates.get(name, machine['date'])})"
        for name, result in scenarios.items()
        if name in SCENARIOS
    )
    (args.out / "latest.md").write_text(f"Machine: {header}.\n\n{body}\n")
    if "latency" in args.scenarios or not args.scenarios:
        _plot(scenarios["latency"], Path("docs/_static/latency.png"))
    print(f"results written to {args.out}/latest.json and latest.md")
    return 0


def _plot(result: dict[str, dict[str, dict[str, dict[str, float]]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (nox -s bench installs it)")
        return
    figure, axes = plt.subplots(1, len(result), figsize=(5 * len(result), 4), sharey=True)
    for axis, (broker, by_backlog) in zip(
        axes if len(result) > 1 else [axes], result.items(), strict=True
    ):
        backlogs = sorted(by_backlog, key=int)
        for config in latency.CONFIGS:
            axis.plot(
                [int(n) for n in backlogs],
                [by_backlog[n][config]["p50"] for n in backlogs],
                marker="o",
                label=config,
            )
        axis.set_yscale("log")
        axis.set_title(broker)
        axis.set_xlabel("low tasks queued ahead")
    axes_list = axes if len(result) > 1 else [axes]
    axes_list[0].set_ylabel("critical task start latency, p50 (s)")
    axes_list[-1].legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"plot written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
