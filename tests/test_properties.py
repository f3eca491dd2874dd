"""Routing invariants over random registries, checked through Celery's own router."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from hypothesis import given
from hypothesis import strategies as st

import prioroute
from prioroute import Registry, build
from prioroute.testing import assert_routes, published_route, registries


def _app(registry: Registry) -> Celery:
    app = Celery("prop", broker="memory://", set_as_current=False)
    prioroute.configure(app, registry)
    return app


@given(registries())
def test_router_sends_each_task_to_its_tier(registry: Registry) -> None:
    app = _app(registry)
    ranks = registry.tiers
    for registration in registry.registrations():
        route = app.amqp.router.route({}, registration.task)
        tier = ranks[registration.tier]
        assert route["queue"].name == (registration.queue or tier.queue or "prioroute")
        assert route["queue"].name in app.amqp.queues
        assert route["queue"].max_priority >= route["priority"]
        for other in registry.registrations():
            other_route = app.amqp.router.route({}, other.task)
            if tier.urgency > ranks[other.tier].urgency:
                assert route["priority"] > other_route["priority"]
            elif tier.urgency == ranks[other.tier].urgency:
                assert route["priority"] == other_route["priority"]


@given(registries(max_tasks=8))
def test_published_priority_orders_tiers(registry: Registry) -> None:
    """What the broker receives, not just what the router says."""
    app = _app(registry)

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
    finally:
        before_task_publish.disconnect(record)
    for registration in registry.registrations():
        assert seen[registration.task] == tuple(published_route(app, registration.task).values())
    urgency = {r.task: registry.tiers[r.tier].urgency for r in registry.registrations()}
    by_priority = sorted(seen, key=lambda name: seen[name][1])
    assert [urgency[n] for n in by_priority] == sorted(urgency[n] for n in by_priority)
    assert_routes(app)


@given(registries())
def test_every_routed_queue_is_declared(registry: Registry) -> None:
    settings = build(registry)
    declared = {q.name for q in settings.task_queues}
    assert {route["queue"] for route in settings.task_routes.values()} <= declared
    assert len({q.max_priority for q in settings.task_queues}) == 1


@given(registries())
def test_build_is_deterministic(registry: Registry) -> None:
    assert build(registry) == build(registry)
    assert build(registry).as_dict() == build(registry).as_dict()


@given(registries(), st.booleans())
def test_configure_twice_equals_once(registry: Registry, with_user_routes: bool) -> None:
    once = Celery("once", broker="memory://", set_as_current=False)
    twice = Celery("twice", broker="memory://", set_as_current=False)
    for app in (once, twice):
        if with_user_routes:
            app.conf.task_routes = {"zz.*": {"queue": "user"}}
    settings = prioroute.configure(once, registry)
    prioroute.configure(twice, registry)
    assert prioroute.configure(twice, registry) == settings
    names = [r.task for r in registry.registrations()] + ["zz.unregistered"]
    for name in names:
        a, b = once.amqp.router.route({}, name), twice.amqp.router.route({}, name)
        assert (a["queue"].name, a.get("priority")) == (b["queue"].name, b.get("priority"))
    assert len(once.conf.task_routes) == len(twice.conf.task_routes)
