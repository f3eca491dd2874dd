"""The operator commands without a broker: workers, and the error paths of verify/monitor."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from prioroute._cli import main
from prioroute._operate import TierWaits, _percentile

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


class TestWorkers:
    def test_ansflow_plan_with_reasons(self) -> None:
        code, output = run("workers", "examples.ansflow:app", "-c", "5")
        assert code == 0, output
        lines = output.splitlines()
        assert lines[0] == "# 2 workers for examples.ansflow:app (topology shared)"
        assert lines[2] == (
            "celery -A examples.ansflow:app worker -Q default -c 3 --prefetch-multiplier 1 "
            "-n default@%h"
        )
        assert "prefetch 1: it serves more than one urgency" in lines[1]
        assert lines[4].endswith("-Q cleanup -c 2 --prefetch-multiplier 4 -n cleanup@%h")

    def test_app_given_as_dash_a(self) -> None:
        code, output = run(
            "-A", "examples.ansflow:app", "workers", "--lane", "default=4", "--lane", "cleanup=1"
        )
        assert code == 0, output
        assert "-Q default -c 4 " in output
        assert "-Q cleanup -c 1 " in output

    def test_json_for_service_templates(self) -> None:
        code, output = run(
            "workers", "examples.ansflow", "--format", "json", "--app-path", "ansflow.celery:app"
        )
        assert code == 0, output
        data = json.loads(output)
        assert data["topology"] == "shared"
        first = data["workers"][0]
        assert first["argv"][:4] == ["celery", "-A", "ansflow.celery:app", "worker"]
        assert first["queues"] == ["default"]
        assert first["why"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["-c", "1"], "concurrency 1 is too small"),
            (["--lane", "default"], "--lane takes QUEUE_OR_TIER=N"),
            (["--lane", "nope=1"], "'nope'"),
            (["-c", "4", "--lane", "default=1"], "either --concurrency or --lane"),
        ],
    )
    def test_errors(self, args: list[str], message: str) -> None:
        code, output = run("workers", "examples.ansflow:app", *args)
        assert code != 0
        assert message in output
        assert "Traceback" not in output

    def test_an_app_prioroute_did_not_configure(self) -> None:
        code, output = run("workers", "examples.seed")
        assert code == 1
        assert "is not configured" in output

    def test_missing_app(self) -> None:
        code, output = run("workers")
        assert code == 4
        assert "missing APP" in output


class TestBrokerErrors:
    """Unreachable brokers and wrong credentials: one clear line, password masked, exit 3."""

    @pytest.fixture(autouse=True)
    def _closed_port(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        monkeypatch.setenv("ANSFLOW_BROKER_URL", "amqp://ops:s3cret-pw@127.0.0.1:1//")
        sys.modules.pop("examples.ansflow", None)
        sys.modules.pop("examples.ansflow.tasks", None)
        yield
        # Later tests import the example with its own broker URL again.
        sys.modules.pop("examples.ansflow", None)
        sys.modules.pop("examples.ansflow.tasks", None)

    @pytest.mark.parametrize(
        "command", [["verify"], ["monitor", "--once"], ["dead"], ["dead", "--requeue-all"]]
    )
    def test_unreachable(self, command: list[str]) -> None:
        code, output = run(
            *command,
            "examples.ansflow:app",
            "--interval" if command[0] == "monitor" else "--timeout",
            "1",
        )
        assert code == 3, output
        assert "cannot reach the broker at amqp://ops:**@127.0.0.1:1//" in output
        assert "s3cret-pw" not in output
        assert "Traceback" not in output


def test_monitor_needs_a_configured_app() -> None:
    code, output = run("monitor", "examples.seed", "--once")
    assert code == 1
    assert "not configured by prioroute" in output


def test_percentiles() -> None:
    assert _percentile([], 50) is None
    assert _percentile([1.0], 95) == 1.0
    waits = [float(n) for n in range(1, 101)]
    assert TierWaits.of("low", waits) == TierWaits("low", 100, 50.0, 95.0)


def test_celery_subcommand() -> None:
    """`celery -A proj prioroute ...` runs the same commands with Celery's app."""
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "examples.ansflow", "prioroute", "workers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "celery -A examples.ansflow worker -Q default" in result.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "examples.ansflow", "prioroute", "show"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "kubernetes_integration.tasks.deploy_application" in shown.stdout


def test_dead_requeue_takes_ids_or_all_not_both() -> None:
    code, output = run("dead", "examples.ansflow:app", "--requeue", "x", "--requeue-all")
    assert code == 4, output
    assert "give --requeue TASK_ID or --requeue-all, not both" in output
