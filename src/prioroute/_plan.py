"""The worker plan: which ``celery worker`` processes a configured app needs."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Mapping

import attrs
from celery import Celery

from ._build import Layout
from ._errors import PriorouteError
from ._registry import Registry

__all__ = ["LANE_PREFETCH", "Worker", "WorkerPlan", "plan_workers"]

#: The prefetch multiplier of a worker whose queues hold a single urgency. Order does not
#: matter there, and reserving a few tasks ahead raises throughput (prefetch 1 with
#: acks_late costs about a quarter of it on short tasks).
LANE_PREFETCH = 4


@attrs.frozen
class Worker:
    """One ``celery worker`` process of a plan.

    Attributes:
        name: Its node name before ``@%h``: the first queue it consumes.
        queues: The queues it consumes (``-Q``), the most urgent first.
        tiers: The tiers whose tasks it serves, the most urgent first.
        concurrency: Its pool size (``-c``).
        prefetch_multiplier: 1 where it serves more than one urgency, so a critical task
            never waits behind reserved ones; :data:`LANE_PREFETCH` where all its tasks are
            equally urgent (tasks no tier names count as the least urgent tier).
    """

    name: str
    queues: tuple[str, ...]
    tiers: tuple[str, ...]
    concurrency: int
    prefetch_multiplier: int

    def argv(self, app: str) -> list[str]:
        """The command line that starts this worker for the app at *app* (``-A``)."""
        return [
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            ",".join(self.queues),
            "-c",
            str(self.concurrency),
            "--prefetch-multiplier",
            str(self.prefetch_multiplier),
            "-n",
            f"{self.name}@%h",
        ]


@attrs.frozen
class WorkerPlan:
    """The workers that serve a configured app's queues, and their command lines.

    Attributes:
        app: What ``celery -A`` is given.
        topology: The app's topology, ``"shared"`` or ``"lanes"``.
        workers: One entry per worker process, the most urgent first.
    """

    app: str
    topology: str
    workers: tuple[Worker, ...]

    def commands(self) -> list[str]:
        """Each worker's command line, ready for a shell."""
        return [shlex.join(worker.argv(self.app)) for worker in self.workers]

    def __str__(self) -> str:
        return "\n".join(self.commands())


def plan_workers(
    app: Celery,
    concurrency: int | Mapping[str, int] = 2,
    *,
    app_path: str | None = None,
) -> WorkerPlan:
    """Plan the ``celery worker`` processes for an app :func:`~prioroute.configure` set up.

    Every queue prioroute declares gets exactly one worker. The shared queue of the
    ``"shared"`` topology holds several tiers, so its worker prefetches one task at a time;
    a lane that holds one tier gets :data:`LANE_PREFETCH`. In the ``"lanes"`` topology the
    default queue (tasks no tier names, Celery's own tasks) rides with the least urgent
    lane.

    Args:
        app: A configured Celery app.
        concurrency: The total number of pool processes, spread over the workers (each
            gets one, the rest go to the most urgent first); or, per worker, a mapping from
            a queue name or a tier name to its concurrency.
        app_path: What ``celery -A`` is given; ``app.main`` if ``None``.

    Raises:
        PriorouteError: The app was not configured, or *concurrency* cannot be met.

    >>> from celery import Celery
    >>> import prioroute
    >>> app = Celery("proj", broker="redis://127.0.0.1:6379/0")
    >>> _ = prioroute.configure(app, prioroute.Registry(), topology="lanes")
    >>> print(plan_workers(app, {"critical": 2, "normal": 1, "low": 1}))
    celery -A proj worker -Q prioroute.critical -c 2 --prefetch-multiplier 4 -n prioroute.critical@%h
    celery -A proj worker -Q prioroute.normal -c 1 --prefetch-multiplier 4 -n prioroute.normal@%h
    celery -A proj worker -Q prioroute.low,prioroute -c 1 --prefetch-multiplier 4 -n prioroute.low@%h
    """
    from ._configure import configured_registry, layout_of

    layout, registry = layout_of(app), configured_registry(app)
    if layout is None or registry is None:
        raise PriorouteError(
            f"app {getattr(app, 'main', app)!r} is not configured; "
            "call prioroute.configure(app) before planning its workers"
        )
    path = app_path or app.main
    if not path or path == "__main__":
        raise PriorouteError(
            "cannot tell what `celery -A` should import for this app (its main name is "
            f"{app.main!r}); pass plan_workers(app, app_path='package.module:app')"
        )
    groups = _groups(layout, registry)
    sizes = _concurrency(concurrency, groups, layout)
    least = min(tier.urgency for tier in layout.tiers.values())
    workers = []
    for (queues, tiers), size in zip(groups, sizes, strict=True):
        urgencies = {layout.tiers[t].urgency for t in tiers}
        if layout.shared_queue in queues:
            urgencies.add(least)  # tasks no tier names rank with the least urgent tier
        single = len(urgencies) == 1
        workers.append(
            Worker(
                name=queues[0],
                queues=queues,
                tiers=tiers,
                concurrency=size,
                prefetch_multiplier=LANE_PREFETCH if single else 1,
            )
        )
    return WorkerPlan(app=path, topology=layout.topology, workers=tuple(workers))


def _groups(layout: Layout, registry: Registry) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(queues, tiers) per worker: each queue holding tiers is one; an empty default queue
    joins the least urgent worker."""
    held = layout.queues(registry)
    by_urgency = sorted(layout.tiers, key=lambda t: -layout.tiers[t].urgency)
    groups = [
        ([queue], [t for t in by_urgency if t in tiers]) for queue, tiers in held.items() if tiers
    ]
    for queue, tiers in held.items():
        if not tiers:
            groups[-1][0].append(queue)
    return [(tuple(queues), tuple(tiers)) for queues, tiers in groups]


def _concurrency(
    spec: int | Mapping[str, int],
    groups: list[tuple[tuple[str, ...], tuple[str, ...]]],
    layout: Layout,
) -> list[int]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < len(groups):
            raise PriorouteError(
                f"concurrency {spec} is too small: this app needs {len(groups)} workers "
                f"({', '.join(q[0] for q, _ in groups)}), each with at least one process"
            )
        sizes = [1] * len(groups)
        for extra in range(spec - len(groups)):
            sizes[extra % len(groups)] += 1
        return sizes
    if not isinstance(spec, Mapping):
        raise PriorouteError(
            f"concurrency must be an int or a mapping of queue or tier names to ints, got {spec!r}"
        )
    names: dict[str, int] = {}
    for index, (queues, _) in enumerate(groups):
        names[queues[0]] = index
    for tier in layout.tiers:  # a tier names the worker of its own lane
        home = layout.home(tier)
        if home in names and groups[names[home]][1] == (tier,):
            names.setdefault(tier, names[home])
    given: list[int | None] = [None] * len(groups)
    for key, value in spec.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PriorouteError(
                f"concurrency names {key!r}{hint}, which is neither a queue nor a tier of "
                f"this app; known: {', '.join(names)}"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PriorouteError(f"concurrency[{key!r}] must be an int >= 1, got {value!r}")
        given[names[key]] = value
    missing = [groups[i][0][0] for i, size in enumerate(given) if size is None]
    if missing:
        raise PriorouteError(
            f"concurrency gives no size for {', '.join(map(repr, missing))}; every queue "
            "needs a worker, or its tasks wait forever"
        )
    return [size for size in given if size is not None]
