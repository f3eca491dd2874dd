"""The how-to `docs/migrate.md`, run as written: every ``sh`` block, line by line, in order.

A line's ``# exits N`` is the exit code it must give (0 if absent); ``export`` lines set
the environment of the lines after them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from prioroute._migrate import INFLIGHT

from .conftest import ROOT

pytestmark = pytest.mark.broker

DOC = ROOT / "docs" / "migrate.md"
REDIS_DB = "redis://127.0.0.1:6379/14"
QUEUES = ("default", "cleanup")
_EXIT = re.compile(r"\s+#\s*exits?\s+(\d+)\s*$")


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


@pytest.fixture(name="clean")
def _clean(amqp_url: str, redis_url: str) -> Iterator[None]:
    def clean() -> None:
        import redis

        client = redis.Redis.from_url(REDIS_DB)
        for key in [
            *client.scan_iter(match="celery*"),
            *client.scan_iter(match="_kombu*"),
            INFLIGHT,
        ]:
            client.delete(key)
        client.close()
        with Connection(amqp_url) as connection:
            channel: Any = connection.default_channel
            for name in QUEUES:
                channel.queue_delete(name)

    clean()
    yield
    clean()


def test_the_migration_how_to_runs_as_written(clean: None, amqp_url: str) -> None:
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)  # `python3` and `prioroute` of this venv
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    outputs = []
    for line in _commands():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0]
            continue
        found = _EXIT.search(line)
        want = int(found.group(1)) if found else 0
        command = line[: found.start()] if found else line
        if command.startswith("python3 "):
            command = f"{shlex.quote(sys.executable)} {command.removeprefix('python3 ')}"
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == want, f"{line!r}: {result.stdout}{result.stderr}"
        outputs.append((command, result.stdout))
    print("\n" + "\n".join(f"$ {c}\n{o}" for c, o in outputs))

    dry, staged, rest = [
        json.loads(o) if "--format json" in c else o for c, o in outputs if "migrate" in c
    ]
    assert "would move 500 task(s)" in dry
    assert "to cleanup: 300" in dry
    assert "tier critical: 50" in dry
    assert "moved 450 task(s)" in staged
    assert "left in the source, tier 'critical' not selected: 50" in staged
    assert rest["tiers"] == {"critical": 50}
    assert rest["unplaceable"] == {}
    with Connection(amqp_url) as connection:
        channel: Any = connection.default_channel
        depths = {name: channel.queue_declare(name, passive=True).message_count for name in QUEUES}
    assert depths == {"default": 200, "cleanup": 300}
