"""Run benchmark scenarios: ``python -m benchmarks [scenario ...]``; prints tables, writes JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import celery
import kombu

from benchmarks import scaling

SCENARIOS = {"scaling": scaling}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"one of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    results = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "celery": celery.__version__,
            "kombu": kombu.__version__,
        },
        "scenarios": {},
    }
    for name in args.scenarios or list(SCENARIOS):
        module = SCENARIOS[name]
        result = module.run()
        results["scenarios"][name] = result
        print(module.table(result), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
