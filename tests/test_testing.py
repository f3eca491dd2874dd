from __future__ import annotations

import pytest
from celery import Celery

import prioroute
import prioroute.testing
from prioroute import Registry
from prioroute.testing import assert_routes


class TestAssertRoutes:
    """assert_routes() passes for a correct app and names each problem otherwise."""

    def test_ansflow_passes(self) -> None:
        from examples.ansflow import app

        assert_routes(app)

    def test_not_configured(self, app: Celery) -> None:
        with pytest.raises(AssertionError, match="was not configured by prioroute"):
            assert_routes(app)

    def test_unknown_task(self, app: Celery, registry: Registry) -> None:
        registry.register("proj.nope", "low")
        prioroute.configure(app, registry)
        with pytest.raises(AssertionError, match="has no task called"):
            assert_routes(app)

    def test_priority_shadowed_after_configure(self, app: Celery, registry: Registry) -> None:
        """task_default_priority set behind prioroute's back beats the route at publish."""

        @registry.critical
        @app.task
        def deploy() -> None: ...

        assert deploy.name
        prioroute.configure(app, registry)
        app.conf.task_default_priority = 0
        type(deploy).priority = 0  # what binding with that setting does
        with pytest.raises(
            AssertionError, match="is published to 'prioroute' with priority 0; its tier wants"
        ):
            assert_routes(app)

    def test_undeclared_queue(self, app: Celery, registry: Registry) -> None:
        @registry.low(queue="lane")
        @app.task
        def sweep() -> None: ...

        prioroute.configure(app, registry)
        del app.amqp.queues["lane"]
        app.amqp.queues.create_missing = False
        with pytest.raises(AssertionError, match="cannot be routed: .Queue 'lane' missing"):
            assert_routes(app)

    def test_low_max_priority(self, app: Celery, registry: Registry) -> None:
        @registry.critical
        @app.task
        def urgent() -> None: ...

        prioroute.configure(app, registry)
        app.amqp.queues["prioroute"].max_priority = 1
        with pytest.raises(
            AssertionError, match="declared with x-max-priority 1; it needs x-max-priority >= 2"
        ):
            assert_routes(app)

    def test_strategies_exposed(self) -> None:
        assert callable(prioroute.testing.registries)
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            _ = prioroute.testing.nope  # type: ignore[attr-defined]


def test_all_is_complete() -> None:
    """Every public name is exported, and only those."""
    public = {n for n in dir(prioroute) if not n.startswith("_")} - {
        "annotations",
        "Any",
        "testing",
    }
    assert sorted(prioroute.__all__) == sorted(public)
    assert prioroute.__version__
    with pytest.raises(AttributeError):
        _ = prioroute.nope  # type: ignore[attr-defined]


def test_every_public_name_is_in_the_reference() -> None:
    import re
    from pathlib import Path

    import prioroute.testing

    reference = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()
    missing = [n for n in prioroute.__all__ if not re.search(rf"prioroute\.{n}\b", reference)]
    missing += [
        n
        for n in prioroute.testing.__all__
        if not re.search(rf"(testing|_strategies)\.{n}\b", reference)
    ]
    assert missing == []
