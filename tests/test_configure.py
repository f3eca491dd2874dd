from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, shared_task
from celery.exceptions import CDeprecationWarning
from celery.signals import before_task_publish
from kombu import Exchange, Queue

import prioroute
from prioroute import ConfigConflictError, PriorouteError, QueueConflictError, Registry, Retry, Tier
from prioroute.testing import assert_routes, published_route


@pytest.fixture(name="published")
def _published() -> Iterator[list[dict[str, Any]]]:
    """What every publish in the test really sent: task, queue (routing key), priority."""
    seen: list[dict[str, Any]] = []

    def record(sender: str, routing_key: str, properties: dict[str, Any], **_: Any) -> None:
        seen.append(
            {"task": sender, "routing_key": routing_key, "priority": properties.get("priority")}
        )

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)


def route(app: Celery, name: str) -> tuple[str, int | None]:
    result = app.amqp.router.route({}, name)
    return result["queue"].name, result.get("priority")


class TestRouting:
    """configure() makes Celery's own router and publisher follow the tiers."""

    def test_every_form_of_task(self, app: Celery, registry: Registry) -> None:
        @registry.critical
        @app.task
        def deploy() -> None: ...

        @app.task(name="proj.health")
        @registry.normal
        def health() -> None: ...

        @registry.low(queue="cleanup")
        @app.task(name="proj.cleanup")
        def cleanup() -> None: ...

        settings = prioroute.configure(app, registry)
        assert route(app, "tests.test_configure.deploy") == ("prioroute", 2)
        assert route(app, "proj.cleanup") == ("cleanup", 0)
        assert health.name == "proj.health"  # binding tells the registry the name
        assert route(app, "proj.health") == ("prioroute", 1)
        assert settings.task_routes.keys() == {"tests.test_configure.deploy", "proj.cleanup"}
        assert_routes(app)

    def test_published_priority_is_the_tiers(
        self, app: Celery, registry: Registry, published: list[dict[str, Any]]
    ) -> None:
        @registry.critical
        @app.task
        def deploy() -> None: ...

        @registry.low
        @app.task
        def sweep() -> None: ...

        prioroute.configure(app, registry)
        deploy.delay()
        sweep.apply_async()
        app.send_task("tests.test_configure.deploy")
        assert [(p["routing_key"], p["priority"]) for p in published] == [
            ("prioroute", 2),
            ("prioroute", 0),
            ("prioroute", 2),
        ]

    def test_published_route_helper_matches_publish(
        self, app: Celery, registry: Registry, published: list[dict[str, Any]]
    ) -> None:
        @registry.normal
        @app.task
        def job() -> None: ...

        prioroute.configure(app, registry)
        job.delay()
        assert published_route(app, job.name) == {
            "queue": published[0]["routing_key"],
            "priority": published[0]["priority"],
        }

    def test_shared_task(
        self, app: Celery, registry: Registry, published: list[dict[str, Any]]
    ) -> None:
        @registry.critical
        @shared_task(name="tests.shared_deploy")
        def shared_deploy() -> None: ...

        prioroute.configure(app, registry)
        app.send_task("tests.shared_deploy")
        assert published[-1]["priority"] == 2

    def test_unregistered_tasks_go_to_shared_queue_at_least_urgent_priority(
        self, app: Celery, registry: Registry
    ) -> None:
        prioroute.configure(app, registry)
        assert route(app, "somebody.elses.task") == ("prioroute", 0)

    def test_unregistered_tasks_are_least_urgent_on_redis(
        self, app: Celery, registry: Registry, published: list[dict[str, Any]]
    ) -> None:
        """On Redis a message without priority is the *most* urgent; prioroute's default route
        publishes unregistered tasks at the least urgent step instead."""
        prioroute.configure(app, registry, broker="redis")
        app.send_task("somebody.elses.task")
        assert published[-1]["priority"] == 2
        assert route(app, "somebody.elses.task") == ("prioroute", 2)

    def test_an_apps_own_routes_beat_the_default_route(
        self, app: Celery, registry: Registry
    ) -> None:
        app.conf.task_routes = {"theirs.*": {"queue": "theirs"}}
        prioroute.configure(app, registry)
        assert route(app, "theirs.task")[0] == "theirs"

    def test_tasks_registered_after_configure(self, app: Celery, registry: Registry) -> None:
        """Autodiscovery imports task modules after configure(); they still route."""
        prioroute.configure(app, registry)
        assert route(app, "late.one") == ("prioroute", 0)  # router already built and cached

        registry.register("late.one", "critical")

        @app.task(name="late.two")
        @registry.low(queue="late-lane")
        def late_two() -> None: ...

        assert route(app, "late.one") == ("prioroute", 2)
        assert late_two.name == "late.two"
        assert route(app, "late.two") == ("late-lane", 0)
        assert app.amqp.queues["late-lane"].max_priority == 2
        assert "late-lane" in {q.name for q in app.conf.task_queues}
        assert late_two.acks_late is True

    def test_late_lane_before_amqp_exists(self, registry: Registry) -> None:
        app = Celery("fresh", broker="memory://", set_as_current=False)
        prioroute.configure(app, registry)
        registry.register("x.y", "low", queue="lane-x")
        assert "lane-x" in {q.name for q in app.conf.task_queues}
        assert route(app, "x.y") == ("lane-x", 0)

    def test_router_cache_refreshed(self, app: Celery, registry: Registry) -> None:
        """Celery caches its router on first use (celery/celery#5617)."""
        registry.register("proj.a", "critical")
        assert route(app, "proj.a") == ("celery", None)
        prioroute.configure(app, registry)
        assert route(app, "proj.a") == ("prioroute", 2)


class TestPolicy:
    """Every registered task runs with its tier's policy, however early it was bound."""

    def test_task_bound_before_configure_gets_acks_late(self, app: Celery) -> None:
        registry = Registry(
            [Tier("critical", 9, retry=Retry(max_retries=7, delay=5), time_limit=60)]
        )

        @registry.critical
        @app.task
        def deploy() -> None: ...

        assert deploy.acks_late is False  # touched: bound with Celery's defaults
        prioroute.configure(app, registry)
        assert deploy.acks_late is True
        assert deploy.reject_on_worker_lost is True
        assert deploy.max_retries == 7
        assert deploy.default_retry_delay == 5
        assert deploy.time_limit == 60

    def test_task_bound_after_configure(self, app: Celery) -> None:
        registry = Registry([Tier("slow", 1, rate_limit="5/s", acks_late=False)])

        @registry.tier("slow")
        @app.task
        def crunch() -> None: ...

        prioroute.configure(app, registry)
        assert crunch.rate_limit == "5/s"
        assert crunch.acks_late is False

    def test_task_options_win_over_tier(self, app: Celery, registry: Registry) -> None:
        @registry.critical
        @app.task(max_retries=10, acks_late=False)
        def special() -> None: ...

        @registry.critical
        @app.task(max_retries=11)
        def early() -> None: ...

        assert early.max_retries == 11
        prioroute.configure(app, registry)
        assert special.max_retries == 10
        assert special.acks_late is False
        assert early.max_retries == 11

    @pytest.mark.parametrize("bind_early", [True, False])
    def test_autoretry(self, app: Celery, bind_early: bool) -> None:
        registry = Registry(
            [Tier("t", 5, retry=Retry(autoretry_for=(ConnectionError,), max_retries=2))]
        )
        calls: list[int] = []

        @registry.tier("t")
        @app.task(bind=True)
        def flaky(self: Any) -> None:
            calls.append(self.request.retries)
            raise ConnectionError("down")

        if bind_early:
            assert flaky.name
        prioroute.configure(app, registry)
        assert flaky.autoretry_for == (ConnectionError,)
        assert flaky.max_retries == 2
        assert hasattr(flaky, "_orig_run")  # Celery's autoretry wrapper is installed
        assert calls == []


class TestMerging:
    """What the app already had keeps working; contradictions are errors, never silent."""

    def test_user_routes_queues_annotations_kept(self, app: Celery, registry: Registry) -> None:
        app.conf.task_routes = {"other.*": {"queue": "reports"}}
        app.conf.task_queues = (Queue("reports", Exchange("reports"), routing_key="reports"),)
        app.conf.task_annotations = {
            "other.slow": {"rate_limit": "1/s"},
            "*": {"track_started": True},
        }
        app.conf.broker_transport_options = {"max_retries": 5}
        registry.register("proj.deploy", "critical")
        prioroute.configure(app, registry)
        assert route(app, "other.report") == ("reports", None)
        assert route(app, "proj.deploy") == ("prioroute", 2)
        assert {q.name for q in app.conf.task_queues} == {"prioroute", "reports"}
        assert app.conf.broker_transport_options == {"max_retries": 5, "confirm_publish": True}

        @app.task(name="other.slow")
        def slow() -> None: ...

        assert slow.rate_limit == "1/s"
        assert slow.track_started is True

    def test_glob_route_loses_to_registration(self, app: Celery, registry: Registry) -> None:
        """Documented: a registered task follows its tier even where a glob route matches it."""
        app.conf.task_routes = {"proj.*": {"queue": "elsewhere"}}
        registry.register("proj.deploy", "critical")
        prioroute.configure(app, registry)
        assert route(app, "proj.deploy") == ("prioroute", 2)
        assert route(app, "proj.other") == ("elsewhere", None)

    def test_seed_config_conflicts_listed_together(self, app: Celery, registry: Registry) -> None:
        """The AnsFlow plan's own settings: each contradiction is named with its fix."""
        app.conf.task_default_queue = "default"
        app.conf.task_queues = (
            Queue("default", Exchange("default"), routing_key="default", priority=3),
        )
        app.conf.worker_prefetch_multiplier = 4
        app.conf.task_default_priority = 5
        registry.register("cicd_integrations.tasks.execute_pipeline_async", "critical")
        app.conf.task_routes = {
            "cicd_integrations.tasks.execute_pipeline_async": {"queue": "pipeline_execution"}
        }
        with pytest.raises(ConfigConflictError) as info:
            prioroute.configure(app, registry)
        message = str(info.value)
        assert "worker_prefetch_multiplier = 4: prioroute sets 1" in message
        assert "task_default_priority = 5" in message
        assert "queue 'default' is declared in task_queues" in message
        assert "kombu ignores Queue(priority=...)" in message
        assert "task_routes['cicd_integrations.tasks.execute_pipeline_async']" in message
        assert not isinstance(info.value, QueueConflictError)

    def test_queue_conflict_alone(self, app: Celery, registry: Registry) -> None:
        app.conf.task_queues = (Queue("prioroute", max_priority=9),)
        with pytest.raises(QueueConflictError, match=r"'x-max-priority': 9.*'x-max-priority': 2"):
            prioroute.configure(app, registry)

    def test_same_queue_declared_identically_is_fine(self, app: Celery, registry: Registry) -> None:
        app.conf.task_queues = (
            Queue("prioroute", Exchange("prioroute"), routing_key="prioroute", max_priority=2),
        )
        prioroute.configure(app, registry)
        assert [q.name for q in app.conf.task_queues] == ["prioroute"]

    @pytest.mark.parametrize(
        ("setting", "value", "match"),
        [
            ("task_acks_late", False, "task_acks_late = False: prioroute sets True"),
            ("worker_prefetch_multiplier", 4, "worker_prefetch_multiplier = 4: prioroute sets 1"),
            ("task_serializer", "pickle", "task_serializer = 'pickle'"),
            ("accept_content", ["json", "pickle"], "accept_content"),
            ("task_default_exchange", "other", "task_default_exchange"),
            ("broker_transport_options", {"confirm_publish": False}, "confirm_publish"),
            ("task_default_delivery_mode", 1, "task_default_delivery_mode = 1: prioroute sets"),
            ("task_default_delivery_mode", "transient", "outlive a broker restart"),
            (
                "worker_cancel_long_running_tasks_on_connection_loss",
                False,
                "so it does not run twice",
            ),
            ("broker_connection_retry_on_startup", False, "retrying instead of exiting"),
            (
                "task_annotations",
                {"*": {"acks_late": False}},
                r"task_annotations\['\*'\] sets acks_late",
            ),
        ],
    )
    def test_each_conflict(
        self, app: Celery, registry: Registry, setting: str, value: object, match: str
    ) -> None:
        registry.register("proj.t", "low")
        app.conf[setting] = value
        with pytest.raises(ConfigConflictError, match=match):
            prioroute.configure(app, registry)

    def test_celery_defaults_are_replaced_silently(self, app: Celery, registry: Registry) -> None:
        """Settings the app never set are Celery's defaults: prioroute's replace them."""
        prioroute.configure(app, registry)
        assert app.conf.worker_prefetch_multiplier == 1
        assert app.conf.task_acks_late is True

    @pytest.mark.parametrize("mode", [2, "persistent"])
    def test_persistent_delivery_mode_either_spelling(
        self, app: Celery, registry: Registry, mode: object
    ) -> None:
        app.conf.task_default_delivery_mode = mode
        prioroute.configure(app, registry)
        assert app.conf.task_default_delivery_mode == "persistent"

    def test_accept_content_same_set_is_fine(self, app: Celery, registry: Registry) -> None:
        app.conf.accept_content = ("json",)
        prioroute.configure(app, registry)

    def test_annotation_for_registered_task(self, app: Celery, registry: Registry) -> None:
        registry.register("proj.t", "low")
        app.conf.task_annotations = {"proj.t": {"rate_limit": "1/s"}}
        with pytest.raises(
            ConfigConflictError, match=r"task_annotations\['proj.t'\].*set it on the tier"
        ):
            prioroute.configure(app, registry)

    def test_routing_task_attribute_bound(self, registry: Registry) -> None:
        app = Celery("attrs", broker="memory://", set_as_current=False)
        with pytest.warns(CDeprecationWarning, match="'priority' task attribute"):  # noqa: PT031

            @registry.critical
            @app.task(priority=9)
            def old_style() -> None: ...

            assert old_style.name
        with pytest.raises(
            ConfigConflictError, match=r"sets priority=9 as task options, which beat"
        ):
            prioroute.configure(app, registry)

    def test_routing_task_attribute_late(self, app: Celery, registry: Registry) -> None:
        prioroute.configure(app, registry)

        @registry.critical
        @app.task(queue="somewhere")
        def old_style() -> None: ...

        with (
            pytest.raises(ConfigConflictError, match="sets queue='somewhere'"),
            pytest.warns(CDeprecationWarning, match="'queue' task attribute"),
        ):
            assert old_style.name

    def test_default_priority_set_after_configure(self, app: Celery, registry: Registry) -> None:
        prioroute.configure(app, registry)
        app.conf.task_default_priority = 3

        @registry.critical
        @app.task
        def deploy() -> None: ...

        with pytest.raises(ConfigConflictError, match="given priority 3 by task_default_priority"):
            assert deploy.name

    def test_default_queue_adopted(self, app: Celery, registry: Registry) -> None:
        app.conf.task_default_queue = "default"
        registry.register("a.b", "normal")
        prioroute.configure(app, registry)
        assert route(app, "a.b") == ("default", 1)

    def test_default_queue_disagrees(self, app: Celery, registry: Registry) -> None:
        app.conf.task_default_queue = "default"
        with pytest.raises(ConfigConflictError, match="task_default_queue is 'default' but"):
            prioroute.configure(app, registry, queue="other")

    def test_explicit_queue(self, app: Celery, registry: Registry) -> None:
        prioroute.configure(app, registry, queue="tasks")
        assert app.conf.task_default_queue == "tasks"


class TestConfigureCalls:
    """configure() is idempotent and refuses what it cannot do."""

    def test_twice_equals_once(self, app: Celery, registry: Registry) -> None:
        app.conf.task_routes = {"x.*": "x"}
        registry.register("a", "critical")
        first = prioroute.configure(app, registry)
        routes_once = app.conf.task_routes
        second = prioroute.configure(app, registry)
        assert first == second
        assert len(app.conf.task_routes) == len(routes_once) == 3  # ours, theirs, default
        assert route(app, "a") == ("prioroute", 2)
        assert route(app, "x.y") == ("x", None)

    def test_other_registry_refused(self, app: Celery, registry: Registry) -> None:
        prioroute.configure(app, registry)
        with pytest.raises(PriorouteError, match="already configured with another registry"):
            prioroute.configure(app, Registry())

    def test_not_an_app(self, registry: Registry) -> None:
        with pytest.raises(PriorouteError, match=r"configure\(\) takes a Celery app"):
            prioroute.configure("proj", registry)  # type: ignore[arg-type]

    def test_not_a_registry(self, app: Celery) -> None:
        with pytest.raises(PriorouteError, match="takes a prioroute.Registry"):
            prioroute.configure(app, {})  # type: ignore[arg-type]

    def test_default_registry(self) -> None:
        app = Celery("dflt", broker="memory://", set_as_current=False)
        prioroute.configure(app)
        assert prioroute.configured_registry(app) is prioroute.default_registry

    def test_unknown_broker(self, registry: Registry) -> None:
        app = Celery("sqs", broker="zmq://x", set_as_current=False)
        with pytest.raises(PriorouteError, match="broker URL scheme 'zmq'"):
            prioroute.configure(app, registry)

    def test_configured_registry_none(self, app: Celery) -> None:
        assert prioroute.configured_registry(app) is None


class TestValidate:
    """validate() finds registered names that Celery never registers."""

    def test_unknown_task_with_suggestion(self, app: Celery, registry: Registry) -> None:
        @app.task(name="audit.tasks.cleanup_old_logs")
        def cleanup() -> None: ...

        registry.register("audit.task.cleanup_old_logs", "low")
        prioroute.configure(app, registry)
        with pytest.raises(
            prioroute.UnknownTaskError,
            match=r"'audit.task.cleanup_old_logs' \(did you mean 'audit.tasks.cleanup_old_logs'\?\)",
        ):
            prioroute.validate(app)

    def test_clean(self, app: Celery, registry: Registry) -> None:
        @registry.low
        @app.task
        def fine() -> None: ...

        prioroute.configure(app, registry)
        prioroute.validate(app)


def test_validate_an_empty_registry_does_not_fall_back_to_the_default_one(app: Celery) -> None:
    """An empty Registry has length 0; validate() once treated it as "no registry given"
    and checked the module-level default registry instead."""
    prioroute.register("somewhere.else.entirely", "low")  # the default registry
    try:
        empty = Registry()
        prioroute.configure(app, empty)
        prioroute.validate(app)
        prioroute.validate(app, empty)
    finally:
        prioroute.default_registry._by_name.pop("somewhere.else.entirely", None)
