"""Broker profiles and topologies: the settings are right for each transport, and urgency
order survives each broker's own notion of priority."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.signals import before_task_publish
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection
from kombu.transport.redis import Channel as RedisChannel
from kombu.transport.virtual.base import Channel as VirtualChannel

import prioroute
from prioroute import (
    NO_PRIORITY,
    PROFILES,
    RABBITMQ,
    RABBITMQ4_QUORUM,
    RABBITMQ_QUORUM,
    REDIS,
    SQS,
    BrokerProfile,
    PriorouteError,
    PriorouteWarning,
    Registry,
    Retry,
    Tier,
    TopologyError,
    build,
)
from prioroute._build import Layout
from prioroute.testing import registries

from ._memory import reset_memory_broker

PRIORITY_PROFILES = [p for p in PROFILES.values() if p.supports_priority]


def redis_step(priority: int | None, steps: list[int]) -> int:
    """The Redis list a message lands in, computed by kombu's own code."""
    message = {"properties": {} if priority is None else {"priority": priority}}
    clamped = VirtualChannel._get_message_priority(
        SimpleNamespace(max_priority=9, min_priority=0, default_priority=0), message
    )
    step: int = RedisChannel.priority(SimpleNamespace(priority_steps=steps), clamped)
    return step


def served_before(profile: BrokerProfile, settings: Any, a: int | None, b: int | None) -> bool:
    """Whether a message of priority *a* leaves one queue before one of priority *b*."""
    if profile.priority == "lower-first":
        steps = settings.broker_transport_options["priority_steps"]
        return redis_step(a, steps) < redis_step(b, steps)
    assert profile.priority == "higher-first"
    return (a or 0) > (b or 0)


class TestChoosingAProfile:
    @pytest.mark.parametrize(
        ("url", "name"),
        [
            ("amqp://guest@127.0.0.1//", "rabbitmq"),
            ("pyamqp://h", "rabbitmq"),
            ("amqps://h", "rabbitmq"),
            ("redis://127.0.0.1:6379/0", "redis"),
            ("rediss://h:6380/1", "redis"),
            ("sentinel://h:26379;sentinel://h2:26379", "redis"),
            ("redis+socket:///tmp/redis.sock", "redis"),
            ("sqs://", "sqs"),
            ("filesystem://", "no-priority"),
            ("sqla+postgresql://u@h/db", "no-priority"),
            ("memory://", "rabbitmq"),
            (None, "rabbitmq"),
        ],
    )
    def test_from_the_broker_url(self, url: str | None, name: str) -> None:
        assert prioroute.profile_for(None, url).name == name

    def test_by_name_and_object(self) -> None:
        assert prioroute.profile_for("rabbitmq-quorum") is RABBITMQ_QUORUM
        assert prioroute.profile_for(REDIS, "amqp://") is REDIS

    def test_unknown_scheme_lists_the_known_ones(self) -> None:
        with pytest.raises(PriorouteError, match=r"'kafka'.*amqp://.*redis://.*sqs://.*broker="):
            prioroute.profile_for(None, "kafka://h")

    def test_unknown_name(self) -> None:
        with pytest.raises(PriorouteError, match=r"'rabbit'.*rabbitmq, rabbitmq-quorum"):
            prioroute.profile_for("rabbit")

    def test_configure_picks_the_profile_from_the_url(self, registry: Registry) -> None:
        app = Celery("r", broker="redis://127.0.0.1:6379/0", set_as_current=False)
        settings = prioroute.configure(app, registry)
        assert settings.broker_transport_options["queue_order_strategy"] == "priority"
        assert app.conf.broker_transport_options["priority_steps"] == [0, 1, 2]


class TestRabbitMQ:
    def test_classic_priority_queues(self, registry: Registry) -> None:
        registry.register("t.crit", "critical")
        registry.register("t.low", "low")
        settings = build(registry, broker="rabbitmq")
        (queue,) = settings.task_queues
        assert queue.max_priority == settings.task_queue_max_priority == 2
        assert queue.exchange.type == "direct"
        assert settings.task_routes["t.crit"]["priority"] == 2
        assert settings.task_routes["t.low"]["priority"] == 0
        assert settings.broker_transport_options == {"confirm_publish": True}
        assert settings.task_default_queue_type == "classic"

    def test_lanes_are_priority_queues_too(self, registry: Registry) -> None:
        settings = build(registry, broker="rabbitmq", topology="lanes")
        names = [q.name for q in settings.task_queues]
        assert names == ["prioroute.critical", "prioroute.normal", "prioroute.low", "prioroute"]
        assert {q.max_priority for q in settings.task_queues} == {2}


class TestQuorum:
    def test_lanes_with_delivery_limit_and_dead_letters(self, registry: Registry) -> None:
        registry.register("t.crit", "critical")
        settings = build(registry, broker="rabbitmq-quorum")
        assert settings.task_routes["t.crit"] == {"queue": "prioroute.critical"}
        lane = settings.task_queues[0]
        assert lane.name == "prioroute.critical"
        assert lane.queue_arguments == {
            "x-queue-type": "quorum",
            "x-delivery-limit": 5,
            "x-dead-letter-exchange": "prioroute.critical.dead",
            "x-dead-letter-routing-key": "prioroute.critical.dead",
        }
        assert lane.max_priority is None
        assert lane.exchange.type == "topic"  # Celery's delayed delivery needs it
        assert lane.dead_letter.name == "prioroute.critical.dead"
        assert settings.task_queue_max_priority is None
        assert settings.task_default_queue_type == "quorum"
        assert settings.task_default_exchange_type == "topic"
        assert settings.default_route is None

    def test_shared_topology_is_refused_with_the_reason(self, registry: Registry) -> None:
        with pytest.raises(TopologyError) as caught:
            build(registry, broker="rabbitmq-quorum", topology="shared")
        message = str(caught.value)
        for part in ("'prioroute'", "'critical' (urgency 9)", "no message priority", "'lanes'"):
            assert part in message

    def test_a_lane_holding_two_urgencies_is_refused(self) -> None:
        registry = Registry([Tier("a", 9, queue="mixed"), Tier("b", 1, queue="mixed")])
        with pytest.raises(TopologyError, match="'mixed'"):
            build(registry, broker="sqs")

    def test_tiers_of_equal_urgency_may_share_a_queue(self) -> None:
        registry = Registry([Tier("a", 5, queue="same"), Tier("b", 5, queue="same")])
        assert build(registry, broker="sqs").task_queues[0].name == "same"

    def test_a_late_registration_that_mixes_urgencies_is_refused(self, registry: Registry) -> None:
        app = Celery("q", broker="amqp://127.0.0.1//", set_as_current=False)
        prioroute.configure(app, registry, broker="rabbitmq-quorum")
        with pytest.raises(TopologyError, match="'prioroute.low'"):
            registry.register("late.crit", "critical", queue="prioroute.low")

    def test_declaring_a_lane_declares_its_dead_letter_queue(self, registry: Registry) -> None:
        lane = build(registry, broker="rabbitmq-quorum").task_queues[0]
        with Connection("memory://") as connection:
            channel = connection.default_channel
            lane.bind(channel).declare()
            assert channel._has_queue(lane.dead_letter.name)  # type: ignore[attr-defined]
            assert channel._has_queue(lane.name)  # type: ignore[attr-defined]

    def test_rabbitmq4_two_levels_and_what_is_collapsed(self, registry: Registry) -> None:
        settings = build(registry, broker="rabbitmq4-quorum", topology="shared")
        registry.register("t.crit", "critical")
        registry.register("t.norm", "normal")
        settings = build(registry, broker="rabbitmq4-quorum", topology="shared")
        assert settings.task_routes["t.crit"]["priority"] == 5
        assert settings.task_routes["t.norm"]["priority"] == 0
        (note,) = settings.notes
        assert "'low', 'normal'" in note
        assert "share priority 0" in note

    def test_rabbitmq4_two_urgencies_fit_exactly(self) -> None:
        registry = Registry([Tier("hi", 7), Tier("lo", 2)])
        settings = build(registry, broker=RABBITMQ4_QUORUM, topology="shared")
        assert settings.notes == ()


class TestRedis:
    def test_lower_number_is_sooner(self, registry: Registry) -> None:
        for name, tier in (("t.crit", "critical"), ("t.norm", "normal"), ("t.low", "low")):
            registry.register(name, tier)
        settings = build(registry, broker="redis")
        priorities = {n: r["priority"] for n, r in settings.task_routes.items()}
        assert priorities == {"t.crit": 0, "t.norm": 1, "t.low": 2}
        options = settings.broker_transport_options
        assert options["priority_steps"] == [0, 1, 2]
        assert options["sep"] == "\x06\x16"
        assert options["queue_order_strategy"] == "priority"
        assert options["visibility_timeout"] == 3600
        assert settings.default_route == {"queue": "prioroute", "priority": 2}
        assert settings.as_dict()["task_routes"]["*"] == {"queue": "prioroute", "priority": 2}
        assert settings.task_queue_max_priority is None
        assert all(q.max_priority is None for q in settings.task_queues)

    def test_the_inversion_trap(self, registry: Registry) -> None:
        """RabbitMQ numbering on Redis (critical 9, low 1) serves critical tasks *last*:
        kombu puts 9 in the last step. prioroute's numbering puts critical in step 0."""
        default_steps = [0, 3, 6, 9]
        assert redis_step(9, default_steps) > redis_step(1, default_steps)  # the trap
        assert redis_step(50, default_steps) == 9  # clamped to 9: least urgent (#8967)

        registry.register("t.crit", "critical")
        registry.register("t.low", "low")
        settings = build(registry, broker="redis")
        steps = settings.broker_transport_options["priority_steps"]
        crit, low = (settings.task_routes[n]["priority"] for n in ("t.crit", "t.low"))
        assert redis_step(crit, steps) < redis_step(low, steps)
        assert redis_step(None, steps) == redis_step(crit, steps)  # why the default route

    def test_visibility_timeout_outlasts_retry_delays_and_time_limits(self) -> None:
        registry = Registry(
            [
                Tier("slow", 1, retry=Retry(delay=600, backoff=True, backoff_max=4000)),
                Tier("long", 5, time_limit=2500),
            ]
        )
        options = build(registry, broker="redis").broker_transport_options
        assert options["visibility_timeout"] == 8000

    def test_tiers_without_time_limit_are_noted(self, registry: Registry) -> None:
        (note,) = build(registry, broker="redis").notes
        assert "visibility_timeout (3600 s)" in note
        assert "'critical', 'low', 'normal'" in note

    def test_an_apps_longer_visibility_timeout_is_kept(self, registry: Registry) -> None:
        app = Celery("r", broker="redis://127.0.0.1/0", set_as_current=False)
        app.conf.broker_transport_options = {"visibility_timeout": 43200, "max_connections": 20}
        prioroute.configure(app, registry)
        assert app.conf.broker_transport_options["visibility_timeout"] == 43200
        assert app.conf.broker_transport_options["max_connections"] == 20

    def test_an_apps_shorter_visibility_timeout_conflicts(self, registry: Registry) -> None:
        app = Celery("r", broker="redis://127.0.0.1/0", set_as_current=False)
        app.conf.broker_transport_options = {"visibility_timeout": 60}
        with pytest.raises(
            prioroute.ConfigConflictError,
            match=r"visibility_timeout.*= 60: tiers 'critical', 'low', 'normal' have no "
            r"time_limit.*at least 3600 s.*give those tiers a time_limit",
        ):
            prioroute.configure(app, registry)

    def test_a_short_visibility_timeout_is_kept_when_every_tier_is_bounded(self) -> None:
        # Redelivery after a dead worker takes visibility_timeout on Redis: apps with short
        # tasks want it short, and that is safe once every tier has a time limit.
        registry = Registry(
            [
                Tier("urgent", 2, time_limit=5, retry=Retry(delay=2)),
                Tier("bulk", 1, time_limit=8, retry=Retry(delay=4)),
            ]
        )
        app = Celery("r", broker="redis://127.0.0.1/0", set_as_current=False)
        app.conf.broker_transport_options = {"visibility_timeout": 16}
        prioroute.configure(app, registry)
        assert app.conf.broker_transport_options["visibility_timeout"] == 16

    def test_a_visibility_timeout_below_twice_the_longest_time_limit_conflicts(self) -> None:
        registry = Registry(
            [
                Tier("urgent", 2, time_limit=5, retry=Retry(delay=2)),
                Tier("bulk", 1, time_limit=8, retry=Retry(delay=4)),
            ]
        )
        app = Celery("r", broker="redis://127.0.0.1/0", set_as_current=False)
        app.conf.broker_transport_options = {"visibility_timeout": 15}
        with pytest.raises(
            prioroute.ConfigConflictError,
            match=r"= 15: the tiers' longest retry delay or time limit needs at least 16 s",
        ):
            prioroute.configure(app, registry)
        # Without the app's own value, kombu's default hour stays: it is longer.
        app.conf.broker_transport_options = {}
        assert (
            build(registry, broker="redis").broker_transport_options["visibility_timeout"] == 3600
        )

    def test_dead_workers_tasks_are_looked_for_every_interval(self, registry: Registry) -> None:
        options = build(registry, broker="redis").broker_transport_options
        assert options["unacked_restore_throttle"] == 1
        app = Celery("r", broker="redis://127.0.0.1/0", set_as_current=False)
        app.conf.broker_transport_options = {"unacked_restore_throttle": 5}
        prioroute.configure(app, registry)  # the app's own tuning is kept, no conflict
        assert app.conf.broker_transport_options["unacked_restore_throttle"] == 5

    def test_mismatched_priority_steps_conflict(self, registry: Registry) -> None:
        app = Celery("r", broker="redis://127.0.0.1/0", set_as_current=False)
        app.conf.broker_transport_options = {"priority_steps": [0, 3, 6, 9]}
        with pytest.raises(prioroute.ConfigConflictError, match="priority_steps"):
            prioroute.configure(app, registry)

    def test_a_countdown_beyond_the_visibility_timeout_warns(self, registry: Registry) -> None:
        app = Celery("r", broker="memory://", set_as_current=False)

        @registry.low
        @app.task(name="t.later", shared=False)
        def later() -> None: ...

        prioroute.configure(app, registry, broker="redis")
        later.apply_async(countdown=10)  # well inside: silent
        with pytest.warns(PriorouteWarning, match=r"'t.later'.*7200.*3600"):
            later.apply_async(countdown=7200)
        later.apply_async(countdown=7200)  # once per task


class TestNoPriority:
    @pytest.mark.parametrize("profile", [SQS, NO_PRIORITY, RABBITMQ_QUORUM])
    def test_lanes_by_default_without_priorities(
        self, profile: BrokerProfile, registry: Registry
    ) -> None:
        registry.register("t.crit", "critical")
        settings = build(registry, broker=profile)
        assert settings.task_routes["t.crit"] == {"queue": "prioroute.critical"}
        assert all(q.max_priority is None for q in settings.task_queues)
        assert settings.default_route is None
        assert "*" not in settings.as_dict()["task_routes"]

    def test_sqs_visibility_timeout(self, registry: Registry) -> None:
        assert build(registry, broker="sqs").broker_transport_options == {
            "visibility_timeout": 3600
        }

    def test_unknown_topology(self, registry: Registry) -> None:
        with pytest.raises(TopologyError, match="'lane'.*'shared'.*'lanes'"):
            build(registry, topology="lane")


# -- properties over every profile and topology ----------------------------------------------


def _layout_ok(registry: Registry, profile: BrokerProfile, topology: str) -> bool:
    try:
        Layout.of(registry, profile, "prioroute", topology).check(registry)
    except TopologyError:
        return False
    return True


@given(
    registries(),
    st.sampled_from(list(PROFILES.values())),
    st.sampled_from(["shared", "lanes"]),
)
def test_settings_are_valid_for_the_transport(
    registry: Registry, profile: BrokerProfile, topology: str
) -> None:
    if not _layout_ok(registry, profile, topology):
        assert not profile.supports_priority
        return
    settings = build(registry, broker=profile, topology=topology)
    declared = {q.name: q for q in settings.task_queues}
    assert {r["queue"] for r in settings.task_routes.values()} <= set(declared)
    assert settings.task_default_queue in declared
    for queue in declared.values():
        if profile is RABBITMQ:
            assert queue.max_priority == settings.task_queue_max_priority
            assert queue.max_priority >= max(
                [r["priority"] for r in settings.task_routes.values()], default=0
            )
        else:
            assert queue.max_priority is None
            assert "x-max-priority" not in (queue.queue_arguments or {})
        if profile.queue_type == "quorum":
            assert queue.queue_arguments["x-queue-type"] == "quorum"
            assert queue.queue_arguments["x-delivery-limit"] == profile.delivery_limit
            assert queue.dead_letter.name == queue.queue_arguments["x-dead-letter-routing-key"]
    for route in settings.task_routes.values():
        assert ("priority" in route) == profile.supports_priority
    if profile is REDIS:
        steps = settings.broker_transport_options["priority_steps"]
        assert all(0 <= r["priority"] <= 9 for r in settings.task_routes.values())
        assert steps == list(range(len(steps)))
        assert len(steps) <= 10


@given(
    registries(),
    st.sampled_from(PRIORITY_PROFILES),
    st.sampled_from(["shared", "lanes"]),
)
def test_urgency_order_survives_each_brokers_priority(
    registry: Registry, profile: BrokerProfile, topology: str
) -> None:
    """Two tiers in one queue: the more urgent one's messages leave first under the broker's
    own semantics (kombu's step mapping on Redis), or the profile says it collapsed them."""
    settings = build(registry, broker=profile, topology=topology)
    layout = Layout.of(registry, profile, "prioroute", topology)
    priorities = layout.priorities
    assert priorities is not None
    for queue, tiers in layout.queues(registry).items():
        for a in tiers:
            for b in tiers:
                ua, ub = registry.tiers[a].urgency, registry.tiers[b].urgency
                if ua > ub:
                    if served_before(profile, settings, priorities[a], priorities[b]):
                        continue
                    assert any(repr(a) in n and repr(b) in n for n in settings.notes), (
                        queue,
                        a,
                        b,
                    )
                    assert profile.levels < len({t.urgency for t in registry.tiers.values()})
        # Tasks no tier names are never served before any tier.
        if settings.default_route is not None and queue == settings.task_default_queue:
            fallback = settings.default_route["priority"]
            for a in tiers:
                assert not served_before(profile, settings, fallback, priorities[a])


@given(registries(), st.sampled_from(["shared", "lanes"]))
def test_redis_lists_queues_most_urgent_first(registry: Registry, topology: str) -> None:
    settings = build(registry, broker="redis", topology=topology)
    layout = Layout.of(registry, REDIS, "prioroute", topology)
    held = layout.queues(registry)
    urgencies = [
        max((registry.tiers[t].urgency for t in held[q.name]), default=-1)
        for q in settings.task_queues
    ]
    assert urgencies == sorted(urgencies, reverse=True)


@given(registries(max_tasks=6), st.sampled_from(list(PROFILES.values())))
def test_published_priority_is_the_profiles(registry: Registry, profile: BrokerProfile) -> None:
    """Through Celery's publisher: what the message carries is what the profile says."""
    if not _layout_ok(registry, profile, profile.default_topology):
        return
    reset_memory_broker()
    app = Celery("pub", broker="memory://", set_as_current=False)
    settings = prioroute.configure(app, registry, broker=profile)

    def noop() -> None: ...

    for registration in registry.registrations():
        app.task(name=registration.task, shared=False)(noop)
    seen: dict[str, Any] = {}

    def record(sender: str, properties: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen[sender] = (routing_key, properties.get("priority"))

    before_task_publish.connect(record, weak=False)
    try:
        for registration in registry.registrations():
            app.tasks[registration.task].apply_async()
        app.send_task("nobody.registered.this")
    finally:
        before_task_publish.disconnect(record)
    for registration in registry.registrations():
        route = settings.task_routes[registration.task]
        assert seen[registration.task] == (route["queue"], route.get("priority"))
    default = settings.default_route or {"queue": settings.task_default_queue}
    assert seen["nobody.registered.this"] == (default["queue"], default.get("priority"))
    app.close()
