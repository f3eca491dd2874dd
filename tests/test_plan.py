"""The worker plan: one worker per queue, the right -Q, -c and --prefetch-multiplier."""

from __future__ import annotations

import shlex

import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

import prioroute
from prioroute import LANE_PREFETCH, PriorouteError, Registry, Tier, plan_workers
from prioroute.testing import registries


def _app(broker: str = "amqp://127.0.0.1//") -> Celery:
    return Celery("proj", broker=broker, set_as_current=False)


class TestShared:
    def test_one_worker_for_the_shared_queue(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry)
        plan = plan_workers(app, 4)
        (worker,) = plan.workers
        assert worker.queues == ("prioroute",)
        assert worker.tiers == ("critical", "normal", "low")
        assert (worker.concurrency, worker.prefetch_multiplier) == (4, 1)
        assert plan.commands() == [
            "celery -A proj worker -Q prioroute -c 4 --prefetch-multiplier 1 -n prioroute@%h"
        ]
        assert plan.topology == "shared"

    def test_a_tier_lane_gets_its_own_worker(self) -> None:
        registry = Registry([Tier("critical", 9), Tier("low", 1), Tier("bulk", 0, queue="bulk")])
        app = _app()
        prioroute.configure(app, registry)
        plan = plan_workers(app, 3, app_path="proj.celery:app")
        assert [(w.queues, w.concurrency, w.prefetch_multiplier) for w in plan.workers] == [
            (("prioroute",), 2, 1),
            (("bulk",), 1, LANE_PREFETCH),
        ]
        assert plan.workers[0].argv("proj.celery:app")[:4] == [
            "celery",
            "-A",
            "proj.celery:app",
            "worker",
        ]


class TestLanes:
    def test_a_worker_per_lane_the_default_queue_with_the_least_urgent(
        self, registry: Registry
    ) -> None:
        app = _app("redis://127.0.0.1:6379/0")
        prioroute.configure(app, registry, topology="lanes")
        plan = plan_workers(app, {"critical": 3, "prioroute.normal": 2, "low": 1})
        assert [
            (w.name, w.queues, w.tiers, w.concurrency, w.prefetch_multiplier) for w in plan.workers
        ] == [
            ("prioroute.critical", ("prioroute.critical",), ("critical",), 3, LANE_PREFETCH),
            ("prioroute.normal", ("prioroute.normal",), ("normal",), 2, LANE_PREFETCH),
            ("prioroute.low", ("prioroute.low", "prioroute"), ("low",), 1, LANE_PREFETCH),
        ]

    def test_a_tier_sharing_a_queue_is_not_a_worker_name(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry)
        with pytest.raises(PriorouteError, match=r"'low'.*neither a queue nor a tier"):
            plan_workers(app, {"prioroute": 2, "low": 1})

    def test_total_concurrency_goes_to_the_most_urgent_first(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry, topology="lanes")
        assert [w.concurrency for w in plan_workers(app, 5).workers] == [2, 2, 1]

    def test_quorum_lanes(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry, broker="rabbitmq-quorum")
        assert [w.queues for w in plan_workers(app, 3).workers] == [
            ("prioroute.critical",),
            ("prioroute.normal",),
            ("prioroute.low", "prioroute"),
        ]


class TestErrors:
    def test_not_configured(self) -> None:
        with pytest.raises(PriorouteError, match=r"'proj' is not configured.*configure\(app\)"):
            plan_workers(_app())

    def test_too_little_concurrency(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry, topology="lanes")
        with pytest.raises(PriorouteError, match=r"concurrency 2 is too small: .* 3 workers"):
            plan_workers(app, 2)

    def test_unknown_name_with_a_suggestion(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry, topology="lanes")
        with pytest.raises(PriorouteError, match=r"'critcal' \(did you mean 'critical'\?\)"):
            plan_workers(app, {"critcal": 1, "normal": 1, "low": 1})

    def test_a_queue_without_a_worker(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry, topology="lanes")
        with pytest.raises(PriorouteError, match=r"no size for 'prioroute.low'.*wait forever"):
            plan_workers(app, {"critical": 1, "normal": 1})

    @pytest.mark.parametrize("bad", [0, True, "2", 1.5])
    def test_bad_sizes(self, registry: Registry, bad: object) -> None:
        app = _app()
        prioroute.configure(app, registry)
        with pytest.raises(PriorouteError, match="concurrency"):
            plan_workers(app, {"prioroute": bad})  # type: ignore[dict-item]

    def test_bad_spec(self, registry: Registry) -> None:
        app = _app()
        prioroute.configure(app, registry)
        with pytest.raises(PriorouteError, match="an int or a mapping"):
            plan_workers(app, "4")  # type: ignore[arg-type]

    def test_an_app_without_an_importable_name(self, registry: Registry) -> None:
        app = Celery(set_as_current=False)
        prioroute.configure(app, registry)
        with pytest.raises(PriorouteError, match="app_path="):
            plan_workers(app)


@given(registries(), st.sampled_from(["shared", "lanes"]), st.integers(0, 10))
def test_every_queue_has_exactly_one_worker(registry: Registry, topology: str, extra: int) -> None:
    app = _app()
    settings = prioroute.configure(app, registry, topology=topology)
    count = len(
        {
            q
            for q in settings.task_queues
            if q.name
            in {*(r["queue"] for r in settings.task_routes.values()), settings.task_default_queue}
        }
    )
    plan = plan_workers(app, 20 + extra)
    consumed = [q for w in plan.workers for q in w.queues]
    assert sorted(consumed) == sorted(q.name for q in settings.task_queues)
    assert len(consumed) >= count
    assert sum(w.concurrency for w in plan.workers) == 20 + extra
    for worker in plan.workers:
        urgencies = {registry.tiers[t].urgency for t in worker.tiers}
        if settings.task_default_queue in worker.queues:
            urgencies.add(min(t.urgency for t in registry.tiers.values()))
        assert (worker.prefetch_multiplier == 1) == (len(urgencies) > 1)
        assert shlex.split(plan.commands()[plan.workers.index(worker)])[5] == ",".join(
            worker.queues
        )
    app.close()
