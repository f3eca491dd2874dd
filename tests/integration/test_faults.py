"""Nothing is lost when worker processes die: at-least-once under ``kill -9``.

Bounded: a few hundred 20 ms tasks on 127.0.0.1, a few kills, one deadline; every process
the test starts is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import Scenario, lines_of, scenarios

pytestmark = pytest.mark.broker

TASKS = 500
WARM = 30  # tasks completed before the first kill
KILLS = 3
DEADLINE = 180.0


_scenario = scenarios(
    Scenario("rabbitmq-shared", "amqp", topology="shared", tiers="bounded"),
    # On Redis a dead worker's unacknowledged tasks come back after visibility_timeout:
    # bounded tiers let the app set it to seconds.
    Scenario("redis-shared", "redis", tiers="bounded"),
)


def _done(log: Path) -> set[str]:
    return {line.split()[1] for line in lines_of(log) if line.startswith("done-")}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_killed_workers_lose_no_task(
    scenario: Scenario,
    it_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "starts.log"
    tasks = [it_app.work_critical, it_app.work_normal, it_app.work_low]
    for number in range(TASKS):
        tasks[number % 3].delay(number)
    random.seed(20261204)
    (worker,) = start_workers(it_app)
    kills = 0
    stop = time.monotonic() + DEADLINE
    # Kill only a worker that is working: one whose pool processes die while it boots
    # may never replace them (billiard), which is not the fault under test.
    while len(_done(log)) < WARM and time.monotonic() < stop:
        assert worker.poll() is None, "the worker exited"
        time.sleep(0.05)
    while kills < KILLS and time.monotonic() < stop:  # kill -9 pool processes mid-task
        time.sleep(random.uniform(0.3, 0.8))
        children = _children(worker.pid)
        if children:
            _kill(random.choice(children))
            kills += 1
    orphans = _children(worker.pid)
    _kill(worker.pid)  # and then the worker itself, with tasks reserved and running
    worker.wait(timeout=30)
    for pid in orphans:  # its pool processes: started by this test, stopped by PID
        _kill(pid)
    (restarted,) = start_workers(it_app)[1:]
    while time.monotonic() < stop:
        done = [line for line in lines_of(log) if line.startswith("done-")]
        if len({line.split()[1] for line in done}) >= TASKS:
            break
        assert restarted.poll() is None, "the restarted worker exited"
        time.sleep(0.1)
    done = [line.split()[1] for line in lines_of(log) if line.startswith("done-")]
    counts = Counter(done)
    lost = TASKS - len(counts)
    duplicated = sum(c - 1 for c in counts.values())
    print(
        f"\n{scenario.id}: published {TASKS}, completed {len(counts)}, lost {lost}, "
        f"duplicated {duplicated} ({kills} pool processes and the worker killed with -9)"
    )
    assert kills == KILLS
    assert lost == 0
