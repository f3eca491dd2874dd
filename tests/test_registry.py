from __future__ import annotations

import gc

import pytest
from celery import Celery, Task, shared_task

import prioroute
from prioroute import Registration, RegistrationError, Registry, Tier, UnknownTierError


class TestDecorators:
    """Decorators register tasks in every form Celery has, without binding them."""

    def test_above_app_task_does_not_evaluate(self, app: Celery, registry: Registry) -> None:
        @registry.critical
        @app.task
        def deploy() -> None: ...

        assert not deploy.__evaluated__()  # type: ignore[attr-defined]
        assert not app.finalized
        assert registry.lookup("tests.test_registry.deploy") == Registration(
            "tests.test_registry.deploy", "critical"
        )

    def test_above_app_task_with_name(self, app: Celery, registry: Registry) -> None:
        @registry.low(queue="cleanup")
        @app.task(name="audit.cleanup")
        def cleanup() -> None: ...

        assert registry.lookup("audit.cleanup") == Registration("audit.cleanup", "low", "cleanup")

    def test_above_evaluated_task(self, app: Celery, registry: Registry) -> None:
        @app.task
        def ping() -> None: ...

        assert ping.name  # evaluates the proxy
        registry.normal(ping)
        assert "tests.test_registry.ping" in registry

    def test_above_shared_task(self, registry: Registry) -> None:
        @registry.critical
        @shared_task
        def shared_one() -> None: ...

        @registry.low
        @shared_task(name="explicit.shared")
        def shared_two() -> None: ...

        assert "tests.test_registry.shared_one" in registry
        assert "explicit.shared" in registry

    def test_below_app_task_learns_name_at_bind(self, app: Celery, registry: Registry) -> None:
        @app.task(name="custom.name")
        @registry.normal
        def health() -> None: ...

        assert len(registry) == 0  # the name is Celery's to choose
        assert registry.match(type(app.tasks["custom.name"])) == Registration(
            "custom.name", "normal"
        )
        assert "custom.name" in registry

    def test_by_name_and_task_class(self, registry: Registry) -> None:
        class Audit(Task):  # type: ignore[type-arg]
            name = "audit.tasks.cleanup_old_logs"

        registry.register(Audit, "low")
        registry.register("other.task", "critical", queue="urgent")
        assert [r.task for r in registry.registrations()] == [
            "audit.tasks.cleanup_old_logs",
            "other.task",
        ]
        assert registry.lanes() == {"urgent"}

    def test_decorator_returns_target_unchanged(self, registry: Registry) -> None:
        def f() -> None: ...

        assert registry.critical(f) is f
        assert registry.critical()(f) is f

        def g() -> None: ...

        assert registry.tier("low")(queue="x")(g) is g

    def test_module_level_decorators_use_default_registry(self) -> None:
        prioroute.register("tests.module_level.sample", "low")
        assert prioroute.default_registry.lookup("tests.module_level.sample") == Registration(
            "tests.module_level.sample", "low"
        )
        assert repr(prioroute.critical) == "<TierDecorator 'critical'>"


class TestRegistrationErrors:
    """Contradictions and unknowns are errors that name the task and the fix."""

    def test_twice_same_is_harmless(self, registry: Registry) -> None:
        registry.register("a.b", "low")
        registry.register("a.b", "low")
        assert len(registry) == 1

    def test_two_tiers(self, registry: Registry) -> None:
        registry.register("audit.tasks.cleanup_old_logs", "low")
        with pytest.raises(
            RegistrationError,
            match=r"task 'audit.tasks.cleanup_old_logs' is registered as 'low' and 'critical'; "
            "remove one of the decorators",
        ):
            registry.register("audit.tasks.cleanup_old_logs", "critical")

    def test_two_queues(self, registry: Registry) -> None:
        registry.register("a.b", "low", queue="x")
        with pytest.raises(RegistrationError, match="queue='x' and queue='y'"):
            registry.register("a.b", "low", queue="y")

    def test_function_twice(self, registry: Registry) -> None:
        def f() -> None: ...

        registry.low(f)
        with pytest.raises(RegistrationError, match="registered as 'low' and 'normal'"):
            registry.normal(f)

    def test_unknown_tier_suggests(self, registry: Registry) -> None:
        with pytest.raises(
            UnknownTierError, match=r"unknown tier 'critcal'; did you mean 'critical'\?"
        ):
            registry.register("a.b", "critcal")
        with pytest.raises(UnknownTierError, match="known tiers: 'critical', 'normal', 'low'"):
            registry.tier("urgent")

    @pytest.mark.parametrize("target", [42, "", None, object()])
    def test_unidentifiable(self, registry: Registry, target: object) -> None:
        with pytest.raises(RegistrationError, match="cannot tell which Celery task"):
            registry.register(target, "low")

    def test_bad_queue(self, registry: Registry) -> None:
        with pytest.raises(prioroute.TierError, match="queue name 'a b'"):
            registry.register("x", "low", queue="a b")


class TestTiers:
    """A registry's tiers can be chosen, extended and replaced until an app uses them."""

    def test_custom_tiers(self) -> None:
        registry = Registry([Tier(f"p{i}", i) for i in range(5)])
        assert list(registry.tiers) == ["p0", "p1", "p2", "p3", "p4"]
        with pytest.raises(UnknownTierError):
            _ = registry.critical
        registry.register("x", "p4")

    def test_define_replaces_policy(self, registry: Registry) -> None:
        registry.define(Tier("critical", 9, time_limit=300))
        assert registry.tiers["critical"].time_limit == 300
        registry.define(Tier("bulk", 0))
        assert "bulk" in registry.tiers

    def test_tiers_read_only(self, registry: Registry) -> None:
        with pytest.raises(TypeError):
            registry.tiers["x"] = Tier("x", 1)  # type: ignore[index]

    @pytest.mark.parametrize(
        ("tiers", "match"),
        [
            ([Tier("a", 1), Tier("a", 2)], "tier 'a' is defined twice"),
            ([], "at least one tier"),
            (["critical"], "takes prioroute.Tier objects"),
        ],
    )
    def test_invalid_tier_sets(self, tiers: list[Tier], match: str) -> None:
        with pytest.raises(RegistrationError, match=match):
            Registry(tiers)

    def test_define_takes_tier(self, registry: Registry) -> None:
        with pytest.raises(RegistrationError, match="define"):
            registry.define("x")  # type: ignore[arg-type]

    def test_define_after_configure_refused(self, app: Celery, registry: Registry) -> None:
        prioroute.configure(app, registry)
        with pytest.raises(
            RegistrationError, match="define tiers before calling prioroute.configure"
        ):
            registry.define(Tier("critical", 9, time_limit=1))

    def test_listener_is_weak(self, registry: Registry) -> None:
        app = Celery("gone", broker="memory://", set_as_current=False)
        prioroute.configure(app, registry)
        del app
        gc.collect()
        registry.define(Tier("later", 3))  # no live app holds the tiers any more
        registry.register("x.y", "later")

    def test_repr(self, registry: Registry) -> None:
        registry.register("a", "low")
        registry.low(lambda: None)
        assert repr(registry) == "<Registry tiers=['critical', 'normal', 'low'] tasks=1 pending=1>"
