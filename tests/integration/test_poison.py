"""A task that kills its worker is dead-lettered after its tier's deliveries; the lane moves.

Bounded: one poison task among 200 healthy 20 ms tasks, one deadline; every process the
test starts is stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import prioroute

from .conftest import APP, ROOT, Scenario, lines_of, scenarios

pytestmark = pytest.mark.broker

HEALTHY = 200
DEADLINE = 150.0


_scenario = scenarios(
    Scenario("rabbitmq-classic", "amqp", topology="shared", tiers="bounded"),
    Scenario("redis", "redis", tiers="bounded"),
    # The broker counts deliveries itself (x-delivery-limit) and dead-letters.
    Scenario("rabbitmq-quorum", "amqp", profile="rabbitmq-quorum", tiers="bounded"),
)


def _dead_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prioroute", "-A", APP, "dead", "--format", "json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _wait_for_dead(app: ModuleType, stop: float) -> list[prioroute.DeadLetter]:
    while time.monotonic() < stop:
        letters = prioroute.dead_letters(app.app)
        if letters:
            return letters
        time.sleep(0.5)
    pytest.fail("the poison task never reached a dead-letter queue")


def test_poison_task_is_dead_lettered_and_the_lane_keeps_moving(
    scenario: Scenario,
    it_app: ModuleType,
    start_workers: Callable[[ModuleType], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "starts.log"
    poison = it_app.poison.delay(0)
    healthy = [it_app.work_critical, it_app.work_normal, it_app.work_low]
    for number in range(HEALTHY):
        healthy[number % 3].delay(number)
    workers = start_workers(it_app)
    stop = time.monotonic() + DEADLINE
    while time.monotonic() < stop:
        done = {line.split()[1] for line in lines_of(log) if line.startswith("done-")}
        if len(done) >= HEALTHY:
            break
        assert all(w.poll() is None for w in workers), "a worker exited"
        time.sleep(0.1)
    (letter,) = _wait_for_dead(it_app, stop)
    runs = Counter(line.split()[0] for line in lines_of(log))
    done = Counter(line.split()[1] for line in lines_of(log) if line.startswith("done-"))
    print(
        f"\n{scenario.id}: healthy published {HEALTHY}, completed {len(done)}, "
        f"lost {HEALTHY - len(done)}; poison ran {runs['poison']} times, then "
        f"{letter.queue}: {letter.reason}"
    )
    assert len(done) == HEALTHY
    assert letter.task_id == poison.id
    assert letter.task == "it.poison"
    assert letter.args == "(0,)"
    if scenario.profile == "rabbitmq-quorum":  # the broker's x-delivery-limit: 5 redeliveries
        assert runs["poison"] == letter.deliveries == prioroute.RABBITMQ_QUORUM.delivery_limit + 1
        assert "delivery_limit" in letter.reason
    else:  # prioroute's count: the tier's max_deliveries
        assert runs["poison"] == letter.deliveries == 5
        assert "never completed" in letter.reason
        assert "exitcode 13" in letter.reason

    listed = _dead_cli()
    assert listed.returncode == 1, listed.stderr
    assert [d["task_id"] for d in json.loads(listed.stdout)["dead_letters"]] == [poison.id]

    # Requeued, it runs again with a fresh count, and lands in the dead-letter queue again.
    requeued = _dead_cli("--requeue", poison.id, "--requeue", "no-such-id")
    assert requeued.returncode == 1  # one id was not found
    result = json.loads(requeued.stdout)
    assert [d["task_id"] for d in result["requeued"]] == [poison.id]
    assert result["not_found"] == ["no-such-id"]
    assert prioroute.dead_letters(it_app.app) == []
    (again,) = _wait_for_dead(it_app, time.monotonic() + 60)
    assert again.task_id == poison.id
    runs = Counter(line.split()[0] for line in lines_of(log))
    assert runs["poison"] == 2 * letter.deliveries
    assert _dead_cli("--requeue-all").returncode == 0
