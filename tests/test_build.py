from __future__ import annotations

import pytest

import prioroute
from prioroute import PriorouteError, Registry, Settings, Tier, build


class TestBuild:
    """build() is a pure function from a registry to Celery settings."""

    def test_shared_queue_and_priorities(self, registry: Registry) -> None:
        registry.register("ops.deploy", "critical")
        registry.register("ops.health", "normal")
        registry.register("ops.cleanup", "low", queue="cleanup")
        settings = build(registry)
        assert dict(settings.task_routes["ops.deploy"]) == {"queue": "prioroute", "priority": 2}
        assert dict(settings.task_routes["ops.health"]) == {"queue": "prioroute", "priority": 1}
        assert dict(settings.task_routes["ops.cleanup"]) == {"queue": "cleanup", "priority": 0}
        assert [q.name for q in settings.task_queues] == ["prioroute", "cleanup"]
        assert all(q.max_priority == 2 for q in settings.task_queues)
        assert settings.task_queue_max_priority == 2

    def test_reliability_settings(self, registry: Registry) -> None:
        values = build(registry).as_dict()
        assert values["task_acks_late"] is True
        assert values["task_reject_on_worker_lost"] is True
        assert values["worker_prefetch_multiplier"] == 1
        assert values["accept_content"] == ["json"]
        assert values["broker_transport_options"] == {"confirm_publish": True}
        assert values["task_inherit_parent_priority"] is True

    def test_never_emits_task_default_priority(self, registry: Registry) -> None:
        registry.register("a", "critical")
        assert "task_default_priority" not in build(registry).as_dict()

    def test_annotations_carry_tier_policy(self) -> None:
        registry = Registry([Tier("fast", 5, time_limit=10, retry=prioroute.Retry(max_retries=1))])
        registry.register("t", "fast")
        annotation = build(registry).task_annotations["t"]
        assert annotation["time_limit"] == 10
        assert annotation["max_retries"] == 1
        assert "priority" not in annotation

    def test_tier_lane(self) -> None:
        registry = Registry([Tier("bulk", 0, queue="bulk"), Tier("now", 9)])
        registry.register("b", "bulk")
        settings = build(registry, queue="main")
        assert settings.task_routes["b"]["queue"] == "bulk"
        assert [q.name for q in settings.task_queues] == ["main", "bulk"]
        assert settings.task_default_queue == "main"

    def test_queue_arguments_depend_on_tiers_only(self, registry: Registry) -> None:
        before = build(registry).task_queues[0].max_priority
        registry.register("x", "low")
        assert build(registry).task_queues[0].max_priority == before

    def test_single_tier_still_priority_capable(self) -> None:
        settings = build(Registry([Tier("only", 3)]))
        assert settings.task_queues[0].max_priority == 1

    def test_settings_are_immutable(self, registry: Registry) -> None:
        registry.register("a", "low")
        settings = build(registry)
        with pytest.raises(TypeError):
            settings.task_routes["b"] = {}  # type: ignore[index]
        values = settings.as_dict()
        values["task_routes"]["a"]["queue"] = "changed"
        assert settings.task_routes["a"]["queue"] == "prioroute"

    def test_deterministic(self, registry: Registry) -> None:
        for name in ("z", "a", "m"):
            registry.register(name, "normal")
        assert build(registry) == build(registry)
        assert isinstance(build(registry), Settings)

    def test_rejects_non_registry(self) -> None:
        with pytest.raises(PriorouteError, match=r"build\(\) takes a prioroute.Registry"):
            build({})  # type: ignore[arg-type]

    def test_bad_shared_queue(self, registry: Registry) -> None:
        with pytest.raises(prioroute.TierError, match="the shared queue"):
            build(registry, queue="has space")


class TestProfiles:
    """Broker profiles are chosen by name or from the broker URL."""

    @pytest.mark.parametrize(
        "url", ["amqp://guest@localhost//", "pyamqp://x", "amqps://h:5671//", "memory://", None]
    )
    def test_rabbitmq_urls(self, url: str | None) -> None:
        assert prioroute.profile_for(None, url) is prioroute.RABBITMQ

    def test_by_name_and_object(self) -> None:
        assert prioroute.profile_for("rabbitmq") is prioroute.RABBITMQ
        assert prioroute.profile_for(prioroute.RABBITMQ) is prioroute.RABBITMQ

    def test_unknown_name(self) -> None:
        with pytest.raises(
            PriorouteError, match="unknown broker profile 'kafka'; known profiles: rabbitmq"
        ):
            prioroute.profile_for("kafka")

    def test_unknown_scheme(self) -> None:
        with pytest.raises(
            PriorouteError, match=r"broker URL scheme 'zmq' has no prioroute profile.*amqp://"
        ):
            prioroute.profile_for(None, "zmq://x")

    def test_priority_ranks(self) -> None:
        tiers = {t.name: t for t in [Tier("a", 9), Tier("b", 9), Tier("c", 0), Tier("d", 4)]}
        assert prioroute.RABBITMQ.priorities(tiers) == {"a": 2, "b": 2, "c": 0, "d": 1}
        assert prioroute.RABBITMQ.max_priority(tiers) == 2
