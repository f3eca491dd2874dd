from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from prioroute._cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(name="runner")
def _runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(ROOT)
    return CliRunner()


def write_module(tmp_path: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


class TestShow:
    """`prioroute show` prints the routing table without a broker."""

    def test_table_on_ansflow(self, runner: CliRunner) -> None:
        result = runner.invoke(main, ["show", "examples.ansflow:app"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0] == (
            "app ansflow · broker amqp://ansflow:**@localhost:5672// · profile rabbitmq · "
            "topology shared"
        )
        assert "ansflow@" not in result.output.replace("ansflow:**@", "")  # password masked
        assert lines[1] == "priority: higher number = sooner"
        rows = [line.split() for line in lines[4:11]]
        assert [(r[0], r[1], r[2]) for r in rows] == [
            ("critical", "2", "default"),
            ("critical", "2", "default"),
            ("critical", "2", "default"),
            ("normal", "1", "default"),
            ("normal", "1", "default"),
            ("low", "0", "cleanup"),
            ("low", "0", "cleanup"),
        ]
        assert all(max(len(line) for line in lines[:10]) <= 100 for _ in [0])

    def test_json(self, runner: CliRunner) -> None:
        result = runner.invoke(main, ["show", "examples.ansflow", "--format", "json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["shared_queue"] == "default"
        by_task = {row["task"]: row for row in data["tasks"]}
        deploy = by_task["kubernetes_integration.tasks.deploy_application"]
        assert (deploy["tier"], deploy["queue"], deploy["priority"]) == ("critical", "default", 2)
        assert deploy["policy"]["max_retries"] == 3
        assert deploy["policy"]["default_retry_delay"] == 60
        assert {q["name"]: q["max_priority"] for q in data["queues"]} == {
            "cleanup": 2,
            "default": 2,
        }
        assert data["unregistered_tasks"] == {"queue": "default", "priority": 0}
        assert data["topology"] == "shared"
        assert data["notes"] == []

    def test_redis_lanes_say_what_the_broker_cannot_do(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "redis_lanes_app.py").write_text(
            "from celery import Celery\n"
            "import prioroute\n"
            "app = Celery('rl', broker='redis://127.0.0.1:6379/0')\n"
            "registry = prioroute.Registry()\n"
            "registry.register('rl.deploy', 'critical')\n"
            "prioroute.configure(app, registry, topology='lanes')\n"
        )
        monkeypatch.chdir(tmp_path)
        result = runner.invoke(main, ["show", "redis_lanes_app:app"])
        assert result.exit_code == 0, result.output
        assert "profile redis · topology lanes" in result.output
        assert "critical  0         prioroute.critical  rl.deploy" in result.output
        assert "go to 'prioroute' at priority 2" in result.output
        assert "note: redis: a task still running after visibility_timeout" in result.output

    def test_python_dash_m(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "prioroute", "show", "examples.ansflow:app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "kubernetes_integration.tasks.deploy_application" in result.stdout

    def test_import_error_exit_3(self, runner: CliRunner) -> None:
        result = runner.invoke(main, ["show", "no_such_module_here:app"])
        assert result.exit_code == 3
        assert "cannot import 'no_such_module_here': ModuleNotFoundError" in result.output
        assert "Traceback" not in result.output

    def test_broken_module(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_module(
            tmp_path, "broken_app_mod", "raise RuntimeError('boom in settings')\n", monkeypatch
        )
        result = runner.invoke(main, ["show", "broken_app_mod"])
        assert result.exit_code == 3
        assert "RuntimeError: boom in settings" in result.output

    def test_missing_attribute(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_module(tmp_path, "attr_mod", "x = 1\n", monkeypatch)
        result = runner.invoke(main, ["show", "attr_mod:app"])
        assert result.exit_code == 3
        assert "has no Celery app called 'app'" in result.output
        result = runner.invoke(main, ["show", "attr_mod"])
        assert "holds 0 Celery apps (none)" in result.output

    def test_single_app_under_another_name(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_module(
            tmp_path,
            "other_name_mod",
            "from celery import Celery\nimport prioroute\n"
            "worker_app = Celery('w', broker='memory://', set_as_current=False)\n"
            "prioroute.configure(worker_app, prioroute.Registry())\n",
            monkeypatch,
        )
        result = runner.invoke(main, ["show", "other_name_mod"])
        assert result.exit_code == 0, result.output
        assert "tasks not registered with prioroute go to 'prioroute'" in result.output

    def test_not_configured(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_module(
            tmp_path,
            "plain_mod",
            "from celery import Celery\napp = Celery('p', broker='memory://', set_as_current=False)\n",
            monkeypatch,
        )
        result = runner.invoke(main, ["show", "plain_mod:app"])
        assert result.exit_code == 1
        assert "was not configured by prioroute; call prioroute.configure(app)" in result.output

    def test_unknown_registered_task_is_flagged(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_module(
            tmp_path,
            "typo_mod",
            "from celery import Celery\nimport prioroute\n"
            "app = Celery('t', broker='memory://', set_as_current=False)\n"
            "r = prioroute.Registry()\nr.register('proj.tsks.deploy', 'critical')\n"
            "prioroute.configure(app, r)\n",
            monkeypatch,
        )
        result = runner.invoke(main, ["show", "typo_mod:app"])
        assert result.exit_code == 0
        assert "warning: registered but unknown to Celery: proj.tsks.deploy" in result.output

    def test_version(self, runner: CliRunner) -> None:
        result = runner.invoke(main, ["--version"])
        assert result.exit_code == 0
        assert "version" in result.output
