"""Hypothesis strategies for tiers, task names and registries (``prioroute[testing]``)."""

from __future__ import annotations

from hypothesis import strategies as st

from ._registry import Registry
from ._tiers import MAX_URGENCY, Tier

__all__ = ["queue_names", "registries", "task_names", "tier_sets", "tiers"]

_WORD = r"[a-z_][a-z0-9_]{0,10}"


def task_names() -> st.SearchStrategy[str]:
    """Celery-style task names: dotted words such as ``proj.tasks.deploy_app``."""
    return st.lists(st.from_regex(_WORD, fullmatch=True), min_size=1, max_size=4).map(".".join)


def queue_names() -> st.SearchStrategy[str]:
    """Queue names such as ``cleanup`` or ``ops.deploy-2``."""
    return st.from_regex(r"[a-z][a-z0-9_.\-]{0,14}", fullmatch=True)


def tiers(name: str | None = None) -> st.SearchStrategy[Tier]:
    """One tier: any urgency, the shared queue or a lane."""
    names = (
        st.just(name) if name is not None else st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
    )
    return st.builds(
        Tier,
        name=names,
        urgency=st.integers(0, MAX_URGENCY),
        queue=st.none() | queue_names(),
    )


@st.composite
def tier_sets(draw: st.DrawFn, min_size: int = 1, max_size: int = 6) -> tuple[Tier, ...]:
    """Several tiers with distinct names (urgencies may repeat)."""
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
            min_size=min_size,
            max_size=max_size,
            unique=True,
        )
    )
    return tuple(draw(tiers(name)) for name in names)


@st.composite
def registries(draw: st.DrawFn, max_tasks: int = 30) -> Registry:
    """A registry of random tiers with random tasks in them, some with their own lane."""
    registry = Registry(draw(tier_sets()))
    names = draw(st.lists(task_names(), max_size=max_tasks, unique=True))
    tier_names = list(registry.tiers)
    for name in names:
        tier = draw(st.sampled_from(tier_names))
        queue = draw(st.none() | st.none() | queue_names())
        registry.register(name, tier, queue=queue)
    return registry
