"""Fill a broker with the backlog AnsFlow had before prioroute: for trying `prioroute migrate`.

Publishes the way the old, hand-configured app did — plain Celery, every task in Celery's
default queue ``celery``, no priorities — mostly housekeeping, every tenth task a deploy::

    python3 -m examples.ansflow.backlog redis://127.0.0.1:6379/14 --tasks 500
"""

from __future__ import annotations

import argparse

from celery import Celery

HOUSEKEEPING = (
    "cicd_integrations.tasks.cleanup_old_executions",
    "audit.tasks.cleanup_old_logs",
    "cicd_integrations.tasks.health_check_tools",
)
DEPLOY = "kubernetes_integration.tasks.deploy_application"


def publish(url: str, tasks: int) -> dict[str, int]:
    """Publish *tasks* tasks to *url* as the pre-prioroute app did; count them by name."""
    app = Celery("ansflow_before", broker=url, set_as_current=False)
    counts: dict[str, int] = {}
    try:
        for number in range(tasks):
            if number % 10 == 9:
                name, args = DEPLOY, (f"service-{number}",)
            else:
                name, args = HOUSEKEEPING[number % len(HOUSEKEEPING)], ()
            app.send_task(name, args=args)
            counts[name] = counts.get(name, 0) + 1
    finally:
        app.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the broker, e.g. redis://127.0.0.1:6379/14")
    parser.add_argument("--tasks", type=int, default=500)
    options = parser.parse_args()
    for name, count in sorted(publish(options.url, options.tasks).items()):
        print(f"{count:6d}  {name}")


if __name__ == "__main__":
    main()
