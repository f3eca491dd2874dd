"""`prioroute check`: each rule fires on an app with exactly that mistake and stays quiet on a
correct app; the seed's config gets the right diagnosis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from kombu import Exchange, Queue

import prioroute
from prioroute import RULES, PriorouteError, Registry, Report, Tier, check
from prioroute._cli import main
from prioroute.testing import assert_clean

ROOT = Path(__file__).resolve().parents[1]


def _app(broker: str = "amqp://127.0.0.1//", **conf: object) -> Celery:
    app = Celery("doc", broker=broker, set_as_current=False)
    app.conf.update(conf)
    return app


def _tasks(app: Celery, *names: str, **options: object) -> None:
    for name in names:

        def run() -> None:
            return None

        app.task(name=name, shared=False, **options)(run)


def _correct_rabbitmq_app() -> Celery:
    """A hand-written config that does everything right (no prioroute)."""
    app = _app(
        task_queues=(Queue("work", Exchange("work"), routing_key="work", max_priority=9),),
        task_default_queue="work",
        task_routes={"proj.urgent": {"priority": 9}, "proj.*": {"priority": 1}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=600,
        worker_prefetch_multiplier=1,
        task_inherit_parent_priority=True,
        broker_transport_options={"confirm_publish": True},
    )
    _tasks(app, "proj.urgent", "proj.report")
    return app


def _correct_redis_app() -> Celery:
    app = _app(
        "redis://127.0.0.1:6379/0",
        task_routes={"proj.urgent": {"priority": 0}, "proj.*": {"priority": 9}},
        broker_transport_options={"priority_steps": list(range(10)), "sep": ":"},
        task_inherit_parent_priority=True,
        worker_prefetch_multiplier=1,
    )
    _tasks(app, "proj.urgent", "proj.report")
    return app


def _with_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str) -> Celery:
    """An app defined in a real module, for the rules that read source."""
    name = f"doctor_{abs(hash(code))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    app: Celery = module.app
    return app


# Each case: an app with exactly one kind of mistake, and the rule that must find it.
Case = Callable[[Path, pytest.MonkeyPatch], Celery]


def _pr001(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(task_routes={"critical.*": {"queue": "critical"}})
    _tasks(app, "proj.tasks.deploy")
    return app


def _pr001_exact(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(task_routes={"proj.tasks.deplyo": {"queue": "x"}})
    _tasks(app, "proj.tasks.deploy")
    return app


def _pr002(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _with_source(
        tmp,
        mp,
        """
        from celery import Celery
        app = Celery("twice", broker="amqp://", set_as_current=False)
        app.conf.task_routes = {"proj.a": {"queue": "a"}}
        app.conf.update(task_routes={"proj.*": {"queue": "b"}})
        """,
    )


def _pr003(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _with_source(
        tmp,
        mp,
        """
        from celery import Celery
        from kombu import Queue
        app = Celery("qprio", broker="amqp://", set_as_current=False)
        app.conf.task_queues = (Queue("deploy", priority=10),)
        """,
    )


def _pr004(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(task_routes={"proj.urgent": {"queue": "celery", "priority": 9}})
    _tasks(app, "proj.urgent")
    return app


def _pr005(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        task_queues=(Queue("celery", max_priority=5),),
        task_routes={"proj.urgent": {"priority": 50}},
    )
    _tasks(app, "proj.urgent")
    return app


def _pr006(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        task_queues=(Queue("celery", queue_arguments={"x-queue-type": "quorum"}),),
        task_routes={"proj.urgent": {"priority": 9}},
    )
    _tasks(app, "proj.urgent")
    return app


def _pr006_sqs(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app("sqs://", task_routes={"proj.urgent": {"priority": 9}})
    _tasks(app, "proj.urgent")
    return app


def _pr007(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app(task_max_retries=3)


def _pr008(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app("redis://127.0.0.1/0", broker_transport_options={"master_name": "mymaster"})


def _pr008_typo(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app("redis://127.0.0.1/0", broker_transport_options={"visiblity_timeout": 7200})


def _pr009(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        "redis://127.0.0.1/0",
        task_routes={"proj.urgent": {"priority": 9}, "proj.bulk": {"priority": 1}},
        broker_transport_options={"priority_steps": list(range(10))},
    )
    _tasks(app, "proj.urgent", "proj.bulk")
    return app


def _pr009_info(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        "redis://127.0.0.1/0",
        task_routes={"proj.a": {"priority": 9}, "proj.b": {"priority": 0}},
        broker_transport_options={"priority_steps": list(range(10))},
    )
    _tasks(app, "proj.a", "proj.b")
    return app


def _pr009_unprioritised(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        "redis://127.0.0.1/0",
        task_routes={"proj.urgent": {"priority": 0}, "proj.report": {"priority": 6}},
    )
    _tasks(app, "proj.urgent", "proj.report", "proj.other")
    return app


def _pr010(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        "redis://127.0.0.1/0",
        task_routes={"proj.urgent": {"priority": 0}, "proj.bulk": {"priority": 2}},
    )
    _tasks(app, "proj.urgent", "proj.bulk")
    return app


def _pr011(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app("redis://127.0.0.1/0", task_acks_late=True)
    _tasks(app, "proj.slow", default_retry_delay=7200)
    return app


def _pr012(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(task_acks_late=True)
    _tasks(app, "proj.a", time_limit=60)
    return app


def _pr013(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        task_queues=(Queue("celery", max_priority=9),),
        task_routes={"proj.urgent": {"priority": 9}},
        worker_prefetch_multiplier=4,
    )
    _tasks(app, "proj.urgent")
    return app


def _pr014(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app(accept_content=["json", "pickle"])


def _pr015(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(task_acks_late=True, task_reject_on_worker_lost=True)
    _tasks(app, "proj.a")
    return app


def _pr016(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        task_queues=(Queue("celery"),),
        task_create_missing_queues=False,
        task_routes={"proj.a": {"queue": "nowhere"}},
    )
    _tasks(app, "proj.a")
    return app


def _pr017(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app(task_queues=(Queue("work"),), task_default_queue="default")


def _pr018(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app(task_queues=(Queue("celery", max_priority=5), Queue("celery", max_priority=10)))


def _pr019(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app(task_queues=(Queue("celery"), Queue("orphan")))


def _pr020(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _with_source(
        tmp,
        mp,
        """
        from celery import Celery
        app = Celery("noretry", broker="amqp://", set_as_current=False)

        @app.task(name="proj.flaky", max_retries=5, shared=False)
        def flaky():
            return 1
        """,
    )


def _pr021(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    return _app(task_default_priority=5, task_routes={"proj.*": {"priority": 9}})


def _pr022(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app()
    _tasks(app, "proj.a", queue="special")
    with pytest.warns(DeprecationWarning, match="queue"):
        app.finalize(auto=True)  # binds the task, which warns
    return app


def _pr023(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app(
        task_queues=(Queue("celery", max_priority=9),),
        task_routes={"proj.urgent": {"priority": 9}},
        worker_prefetch_multiplier=1,
    )
    _tasks(app, "proj.urgent")
    return app


def _pr024(tmp: Path, mp: pytest.MonkeyPatch) -> Celery:
    app = _app()
    registry = Registry()
    registry.register("proj.ghost", "critical")
    prioroute.configure(app, registry)
    return app


CASES: dict[str, list[Case]] = {
    "PR001": [_pr001, _pr001_exact],
    "PR002": [_pr002],
    "PR003": [_pr003],
    "PR004": [_pr004],
    "PR005": [_pr005],
    "PR006": [_pr006, _pr006_sqs],
    "PR007": [_pr007],
    "PR008": [_pr008, _pr008_typo],
    "PR009": [_pr009, _pr009_info, _pr009_unprioritised],
    "PR010": [_pr010],
    "PR011": [_pr011],
    "PR012": [_pr012],
    "PR013": [_pr013],
    "PR014": [_pr014],
    "PR015": [_pr015],
    "PR016": [_pr016],
    "PR017": [_pr017],
    "PR018": [_pr018],
    "PR019": [_pr019],
    "PR020": [_pr020],
    "PR021": [_pr021],
    "PR022": [_pr022],
    "PR023": [_pr023],
    "PR024": [_pr024],
}


def test_every_rule_has_a_case() -> None:
    assert set(CASES) == set(RULES)


@pytest.mark.parametrize(
    ("rule", "case"),
    [(rule, case) for rule, cases in CASES.items() for case in cases],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_each_rule_finds_its_mistake(
    rule: str, case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = check(case(tmp_path, monkeypatch))
    found = [f for f in report.findings if f.rule == rule]
    assert found, report.format()
    for finding in found:
        assert finding.problem.strip()
        assert finding.fix.strip()
        assert finding.severity in {"error", "warning", "info"}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("correct", [_correct_rabbitmq_app, _correct_redis_app])
def test_a_correct_app_triggers_no_rule(rule: str, correct: Callable[[], Celery]) -> None:
    report = check(correct())
    assert rule not in report.rules, report.format()


@pytest.mark.parametrize("broker", ["amqp://127.0.0.1//", "redis://127.0.0.1:6379/0", "sqs://"])
@pytest.mark.parametrize("topology", ["shared", "lanes"])
def test_prioroute_configured_apps_are_clean(broker: str, topology: str) -> None:
    app = _app(broker)
    registry = Registry(
        [Tier(t.name, t.urgency, time_limit=600) for t in prioroute.DEFAULT_TIERS.values()]
    )
    _tasks(app, "proj.deploy", "proj.cleanup")
    registry.register("proj.deploy", "critical")
    registry.register("proj.cleanup", "low")
    if broker == "sqs://" and topology == "shared":
        topology = "lanes"
    prioroute.configure(app, registry, topology=topology)
    assert_clean(app)


class TestSeed:
    """The seed's config, verbatim (examples/seed): every mistake, with its rule."""

    @pytest.fixture(name="report")
    def _report(self) -> Report:
        from examples.seed import app

        return check(app)

    def test_each_mistake_is_named(self, report: Report) -> None:
        subjects = {(f.rule, f.subject) for f in report.findings}
        # The second task_routes replaced the first ...
        assert ("PR002", "setting 'task_routes'") in subjects
        # ... whose glob patterns match no real task name.
        assert {("PR001", f"route '{p}.*'") for p in ("critical", "normal", "low")} <= subjects
        # kombu dropped Queue(priority=...) on all seven queues.
        assert len([f for f in report.findings if f.rule == "PR003"]) == 7
        # Two "settings" that do not exist.
        assert ("PR007", "setting 'task_max_retries'") in subjects
        assert ("PR007", "setting 'task_default_retry_delay'") in subjects
        # A Sentinel-only option with a plain redis:// URL.
        assert (
            "PR008",
            "setting result_backend_transport_options['master_name']",
        ) in subjects
        assert report.exit_code() == 2

    def test_messages_say_why_and_what_to_do(self, report: Report) -> None:
        text = report.format(width=80)
        assert all(len(line) <= 80 for line in text.splitlines())
        text = " ".join(text.split())
        assert "the second replaces the whole first mapping" in text
        assert "max_priority=10" in text
        assert "@app.task(max_retries=...)" in text


class TestCommandLine:
    def test_seed_exits_2(self) -> None:
        result = CliRunner().invoke(main, ["check", "examples.seed"])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("prioroute check: app 'ansflow_seed'")
        assert "ERRORS (10)" in result.output
        assert "\x1b[" not in result.output  # no colour when not a terminal

    def test_ansflow_exits_0_even_strict(self) -> None:
        result = CliRunner().invoke(main, ["check", "examples.ansflow:app", "--strict"])
        assert result.exit_code == 0, result.output
        assert "no problems found" in result.output

    def test_json(self) -> None:
        result = CliRunner().invoke(main, ["check", "examples.seed", "--format", "json"])
        data = json.loads(result.output)
        assert data["schema"] == 1
        assert data["exit_code"] == result.exit_code == 2
        assert data["summary"]["error"] == 10
        assert set(data["findings"][0]) == {
            "rule",
            "severity",
            "subject",
            "problem",
            "fix",
            "location",
        }

    def test_ignore_and_strict(self) -> None:
        ignored = ["--ignore", "PR002,PR003", "--ignore", "pr007"]
        result = CliRunner().invoke(main, ["check", "examples.seed", *ignored])
        assert result.exit_code == 0, result.output  # only warnings left
        strict = CliRunner().invoke(main, ["check", "examples.seed", *ignored, "--strict"])
        assert strict.exit_code == 1
        assert "ignored PR002, PR003, PR007" in strict.output

    def test_ignore_from_the_apps_setting(self) -> None:
        app = _app(task_max_retries=3, prioroute_check_ignore=["PR007"])
        assert check(app).findings == ()

    def test_unknown_rule_is_a_usage_error(self) -> None:
        result = CliRunner().invoke(main, ["check", "examples.seed", "--ignore", "PR999"])
        assert result.exit_code == 4
        assert "no such rule" in result.output
        with pytest.raises(PriorouteError, match="PR999"):
            check(_app(), ignore=["PR999"])

    def test_app_that_cannot_be_loaded_exits_3(self) -> None:
        result = CliRunner().invoke(main, ["check", "no_such_module_here"])
        assert result.exit_code == 3
        assert "ModuleNotFoundError" in result.output

    def test_missing_app_and_bad_option_exit_4(self) -> None:
        assert CliRunner().invoke(main, ["check"]).exit_code == 4
        assert CliRunner().invoke(main, ["check", "x", "--bogus"]).exit_code == 4

    def test_list_rules(self) -> None:
        result = CliRunner().invoke(main, ["check", "--list-rules"])
        assert result.exit_code == 0
        assert [line.split()[0] for line in result.output.splitlines()] == sorted(RULES)

    def test_a_fresh_process(self) -> None:
        """What a user runs: no state from other tests."""
        result = subprocess.run(
            [sys.executable, "-m", "prioroute", "check", "examples.seed"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert result.stdout.count("PR003") == 7


def test_assert_clean_fails_with_the_report() -> None:
    app = _app(task_max_retries=3)
    with pytest.raises(AssertionError, match=r"PR007 setting 'task_max_retries'"):
        assert_clean(app)
    assert_clean(app, ignore=("PR007",))


def test_check_takes_an_app() -> None:
    with pytest.raises(PriorouteError, match="Celery app"):
        check("proj")  # type: ignore[arg-type]


def test_prioroute_needs_no_redis_package() -> None:
    """Importing and checking must work where the redis client is not installed."""
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import prioroute\n"
        "from celery import Celery\n"
        "app = Celery('x', broker='redis://127.0.0.1/0', set_as_current=False)\n"
        "app.conf.task_routes = {'a': {'priority': 1}}\n"
        "print(prioroute.check(app).exit_code())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_the_reference_lists_every_rule() -> None:
    reference = (ROOT / "docs" / "reference.md").read_text()
    for rule in RULES.values():
        row = f"| `{rule.id}` | {rule.severity} | `{rule.name}` | {rule.summary} | "
        assert row in reference, f"docs/reference.md has no row (with an example) for {rule.id}"
