"""Nothing confirmed is lost when the RabbitMQ node leading the quorum queues dies.

A three-node cluster on 127.0.0.1 (``scripts/cluster up``), prioroute's ``rabbitmq-quorum``
profile (a quorum-queue lane per tier, publisher confirms), the ``celery worker`` processes
``prioroute.plan_workers`` plans, connected through the failover list of the three nodes.
Half of the tasks are published, the workers start, and once some have completed the
node that leads a lane is killed with ``kill -9``; the other half is published while the
cluster fails over. Every task whose publish the broker confirmed must complete, and every
worker that was connected to the dead node must reconnect to a surviving one.

Bounded: 300 tasks of 20 ms, one kill, one deadline. Every process the test starts is
stopped by PID; the killed node is restarted (``scripts/cluster up``) and the queues the
test declared are deleted.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import attrs
import pytest
from kombu import Connection

import prioroute
from tests._ci import unavailable

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cluster.cluster_app"
NODES = {f"prioroute-c{i}@localhost": 5700 + i for i in (1, 2, 3)}
TASKS = 300  # across the three tiers
BEFORE_KILL = 150  # published before the kill; the rest while the cluster fails over
KILL_AFTER = 30  # tasks completed when the leader is killed
CONCURRENCY = 3  # one pool process per lane
DEADLINE = 240.0  # seconds; a run takes about thirty, the bound only stops a hung test
START_COMMAND = "scripts/cluster up"


def _url(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}//"


def _ctl(node: str, *args: str, timeout: float = 60) -> str:
    """``rabbitmqctl -n node args``'s output; raises if it fails."""
    result = subprocess.run(
        ["rabbitmqctl", "-q", "-n", node, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"rabbitmqctl -n {node} {' '.join(args)} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def _problem() -> str | None:
    """Why the three-node cluster cannot be used, or ``None``."""
    for node, port in NODES.items():
        try:
            with Connection(_url(port), connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1, timeout=3)
        except Exception as exc:  # any failure to connect means "not available"
            return f"{node} does not answer on 127.0.0.1:{port} ({type(exc).__name__}: {exc})"
    try:
        status = json.loads(_ctl(next(iter(NODES)), "cluster_status", "--formatter", "json"))
    except Exception as exc:  # rabbitmqctl missing, not allowed, or the node not answering
        return f"cannot ask the cluster for its status ({type(exc).__name__}: {exc})"
    running = sorted(status.get("running_nodes", []))
    if running != sorted(NODES):
        return f"the cluster runs {running}, not the three nodes {sorted(NODES)}"
    return None


@pytest.fixture(name="cluster", scope="session")
def _cluster() -> list[str]:
    """The three running nodes of ``scripts/cluster up``: under CI a test fails without
    them, elsewhere it is skipped."""
    problem = _problem()
    if problem is not None:
        message = (
            f"the three-node RabbitMQ cluster is not running: {problem}. Start it with "
            f"`{START_COMMAND}` (stop it with `scripts/cluster down`), or run `nox -s cluster`"
        )
        unavailable(message)
    return list(NODES)


@attrs.define
class Node:
    """A cluster node the test killed; restarted by the ``killed`` fixture's teardown."""

    name: str
    pid: int


def _leaders(names: set[str]) -> dict[str, str]:
    """The node that leads each of the quorum queues *names*, asked of a running node."""
    for node in NODES:
        try:
            rows = json.loads(_ctl(node, "list_queues", "name", "leader", "--formatter", "json"))
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            continue  # e.g. the node the test killed
        found = {row["name"]: row["leader"] for row in rows if row["name"] in names}
        if len(found) == len(names):
            return found
    raise AssertionError(f"no running node knows the leaders of {sorted(names)}")


def _os_pid(node: str) -> int:
    """The PID of *node*'s Erlang VM, checked to be that node's beam process."""
    pid = int(_ctl(node, "eval", "list_to_integer(os:getpid()).").strip())
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert comm.startswith("beam"), f"pid {pid} of {node} is {comm!r}, not beam"
    assert f"RABBITMQ_NODENAME={node}".encode() in environ, f"pid {pid} does not run {node}"
    return pid


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # killed, waiting for its parent to reap it


@pytest.fixture(name="killed")
def _killed(cluster_app: ModuleType) -> Iterator[list[Node]]:
    """The nodes the test kills; the teardown restarts them (``scripts/cluster up``), which
    rejoin the cluster from their own data, and checks that all three run again (before
    ``cluster_app`` deletes the test's queues)."""
    nodes: list[Node] = []
    yield nodes
    if nodes:
        result = subprocess.run(
            ["bash", "scripts/cluster", "up"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert result.returncode == 0, f"`{START_COMMAND}` failed:\n{result.stderr}"
        assert _problem() is None, _problem()


@pytest.fixture(name="cluster_app")
def _cluster_app(
    cluster: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """``cluster_app`` configured for this test: a queue name of its own, a log of its own.

    Teardown (after the ``killed`` node is back): deletes the queues and exchanges the test
    declared.
    """
    monkeypatch.setenv("PRIOROUTE_CLUSTER_QUEUE", f"prioroute-cluster-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PRIOROUTE_CLUSTER_LOG", str(tmp_path / "done.log"))
    sys.modules.pop(APP, None)
    module = importlib.import_module(APP)
    yield module
    module.app.close()
    names = list(module.app.amqp.queues)
    with Connection(module.app.conf.broker_url) as connection:
        channel = connection.default_channel
        for name in (*names, *(f"{n}.dead" for n in names)):
            channel.queue_delete(name)
            channel.exchange_delete(name)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@pytest.fixture(name="start_workers")
def _start_workers(
    cluster_app: ModuleType, killed: list[Node], tmp_path: Path
) -> Iterator[Callable[[], list[subprocess.Popen[bytes]]]]:
    """Starts the ``celery worker`` processes prioroute plans for the app, one per lane;
    stops them (by PID) afterwards, before the killed node is restarted."""
    workers: list[subprocess.Popen[bytes]] = []

    def start() -> list[subprocess.Popen[bytes]]:
        plan = prioroute.plan_workers(cluster_app.app, CONCURRENCY, app_path=APP)
        for number, worker in enumerate(plan.workers):
            argv = worker.argv(APP)
            del argv[argv.index("-n") : argv.index("-n") + 2]  # a node name unique to this run
            command = [
                sys.executable,
                "-m",
                *argv,
                "--loglevel",
                "INFO",  # logs each connection, and each task
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"cluster{number}-{uuid.uuid4().hex[:6]}@localhost",
            ]
            with (tmp_path / f"worker{number}.out").open("wb") as output:
                workers.append(
                    subprocess.Popen(
                        command, cwd=ROOT, env=dict(os.environ), stdout=output, stderr=output
                    )
                )
        return workers

    yield start
    for worker in workers:  # stop only what we started, by PID
        if worker.poll() is None:
            children = _children(worker.pid)
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
                for pid in children:  # its pool processes, started by this test
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _done(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.strip()]


_CONNECTED = re.compile(r"Connected to amqp://[^@]*@127\.0\.0\.1:(\d+)//")


def _connections(output: Path) -> list[int]:
    """The ports a worker connected to, in order (Celery logs each connection)."""
    return [int(port) for port in _CONNECTED.findall(output.read_text(errors="replace"))]


def _ready(output: Path) -> bool:
    return output.exists() and " ready." in output.read_text(errors="replace")


def _tail(output: Path, lines: int = 30) -> str:
    return "\n".join(output.read_text(errors="replace").splitlines()[-lines:])


def test_killed_leader_loses_no_confirmed_task(
    cluster_app: ModuleType,
    start_workers: Callable[[], list[subprocess.Popen[bytes]]],
    killed: list[Node],
    tmp_path: Path,
) -> None:
    log = tmp_path / "done.log"
    tasks = [cluster_app.work_critical, cluster_app.work_normal, cluster_app.work_low]
    confirmed: set[int] = set()
    failures: Counter[str] = Counter()  # publishes that raised, by exception (and cause)

    def publish(numbers: range) -> None:
        for number in numbers:
            while number not in confirmed:
                try:  # returns once the broker confirmed the message (confirm_publish)
                    tasks[number % 3].delay(number)
                except Exception as exc:  # not confirmed: publish it again
                    cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ else ""
                    failures[type(exc).__name__ + cause] += 1
                    if time.monotonic() > stop:
                        pytest.fail(f"task {number} could not be published: {exc!r}")
                    time.sleep(0.5)
                else:
                    confirmed.add(number)

    start = time.monotonic()
    stop = start + DEADLINE
    publish(range(BEFORE_KILL))  # this declares the lanes, on the node the app connected to
    lane = f"{cluster_app.QUEUE}.critical"
    leader = _leaders({lane})[lane]
    pid = _os_pid(leader)
    workers = start_workers()
    outputs = [tmp_path / f"worker{number}.out" for number in range(len(workers))]

    def check_workers() -> None:
        for worker, output in zip(workers, outputs, strict=True):
            assert worker.poll() is None, (
                f"a worker exited with {worker.returncode}:\n{_tail(output)}"
            )

    # Every worker connected and the lanes busy: kill the leader now.
    while len(set(_done(log))) < KILL_AFTER or not all(map(_ready, outputs)):
        check_workers()
        assert time.monotonic() < stop, f"only {len(set(_done(log)))} tasks completed"
        time.sleep(0.02)
    before = [len(_connections(output)) for output in outputs]
    os.kill(pid, signal.SIGKILL)
    killed.append(Node(leader, pid))
    killed_at = time.monotonic()
    completed_at_kill = len(set(_done(log)))
    while not _gone(pid):
        assert time.monotonic() < stop, f"{leader} (pid {pid}) survived kill -9"
        time.sleep(0.02)
    publish(range(BEFORE_KILL, TASKS))  # through the failover list, while the cluster recovers
    progress = [killed_at]  # when the number of completed tasks grew, from the kill on
    completed = completed_at_kill
    while len(set(_done(log)) & confirmed) < len(confirmed) and time.monotonic() < stop:
        check_workers()
        if len(set(_done(log))) > completed:
            completed = len(set(_done(log)))
            progress.append(time.monotonic())
        time.sleep(0.05)
    finished = time.monotonic()
    pause = max(b - a for a, b in itertools.pairwise(progress)) if len(progress) > 1 else 0.0

    counts = Counter(_done(log))
    lost = len(confirmed - set(counts))
    duplicated = sum(count - 1 for count in counts.values())
    new_leader = _leaders({lane})[lane]
    reconnected = []  # per worker that was on the killed node: the ports it connected to since
    for output, connections in zip(outputs, before, strict=True):
        ports = _connections(output)
        if ports[:connections][-1:] == [NODES[leader]]:
            reconnected.append(ports[connections:])
    print(
        f"\ncluster: published {len(confirmed)} (all confirmed; publishes that raised and "
        f"were repeated: {dict(failures) or 0}), completed {len(counts)}, lost {lost}, "
        f"duplicated {duplicated}.\n"
        f"Killed {leader} (leader of {lane}, pid {pid}) with -9 after {completed_at_kill} of "
        f"{BEFORE_KILL} tasks had completed; new leader {new_leader}; {len(reconnected)} of "
        f"{len(workers)} workers were connected to it, and reconnected to "
        f"{[f'127.0.0.1:{r[-1]}' if r else None for r in reconnected]}; the longest pause "
        f"without a task completing was {pause:.1f} s; all done {finished - killed_at:.1f} s "
        f"after the kill ({finished - start:.1f} s in all)"
    )
    assert len(confirmed) == TASKS
    assert lost == 0, f"{lost} confirmed tasks never completed: {sorted(confirmed - set(counts))}"
    assert new_leader != leader
    for ports in reconnected:
        assert ports, "a worker connected to the killed node did not reconnect"
        assert ports[-1] != NODES[leader]
