"""Run ``benchmarks/bench_app.py`` under one configuration with real workers, then clean up."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from kombu import Connection

ROOT = Path(__file__).resolve().parents[1]
APP = "benchmarks.bench_app"
AMQP_URL = os.environ.get("PRIOROUTE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("PRIOROUTE_REDIS_URL", "redis://127.0.0.1:6379/14")
BROKERS = {"rabbitmq": AMQP_URL, "redis": REDIS_URL, "memory": "memory://"}
DEADLINE = 300.0  # seconds: a run that takes longer is stopped and reported


class Run:
    """One configuration loaded in this process (to publish) plus its worker processes."""

    def __init__(self, module: ModuleType, log: Path) -> None:
        self.module = module
        self.log = log
        self.workers: list[subprocess.Popen[bytes]] = []

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines() if line.strip()]

    def start_workers(self) -> None:
        for number, extra in enumerate(self.module.worker_queues()):
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                APP,
                "worker",
                *extra,
                "--loglevel",
                "ERROR",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
            if "-n" in command:
                index = command.index("-n")
                del command[index : index + 2]
            command += ["-n", f"bench{number}-{uuid.uuid4().hex[:6]}@localhost"]
            self.workers.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=dict(os.environ),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def wait_ready(self) -> None:
        """Until every worker answers a ping: a lane's worker that is still starting would
        add its start-up time to the first tasks' latency."""
        stop = time.monotonic() + DEADLINE
        while time.monotonic() < stop:
            replies = self.module.app.control.ping(timeout=0.5)
            if len(replies) >= len(self.workers):
                return
        raise RuntimeError(f"the workers did not answer within {DEADLINE:.0f} s")

    def wait(self, predicate: object, what: str) -> list[list[str]]:
        stop = time.monotonic() + DEADLINE
        while time.monotonic() < stop:
            lines = self.lines()
            if predicate(lines):  # type: ignore[operator]
                return lines
            for worker in self.workers:
                if worker.poll() is not None:
                    raise RuntimeError(
                        f"a worker exited with {worker.returncode} waiting for {what}"
                    )
            time.sleep(0.02)
        raise RuntimeError(f"timed out after {DEADLINE:.0f} s waiting for {what}")

    def stop(self) -> None:
        for worker in self.workers:  # only what we started, by PID
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


@contextmanager
def running(broker: str, config: str) -> Iterator[Run]:
    """Load bench_app for *config* on *broker*; stop its workers and delete its queues after."""
    url = BROKERS[broker]
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "starts.log"
        os.environ.update(
            BENCH_BROKER=url, BENCH_CONFIG=config, BENCH_QUEUE=queue, BENCH_LOG=str(log)
        )
        sys.modules.pop(APP, None)
        module = importlib.import_module(APP)
        run = Run(module, log)
        try:
            yield run
        finally:
            run.stop()
            names = list(module.app.amqp.queues)
            module.app.close()
            _cleanup(url, queue, names)


def _cleanup(url: str, queue: str, names: list[str]) -> None:
    if url.startswith("memory"):
        from kombu.transport import memory

        memory.Channel.queues.clear()
        memory.Transport.global_state.clear()
        return
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        client.close()
        return
    with Connection(url) as connection:
        channel = connection.default_channel
        for name in {*names, queue, f"{queue}-deploy", f"{queue}-critical", f"{queue}-low"}:
            channel.queue_delete(name)
            channel.exchange_delete(name)
        channel.exchange_delete(f"{queue}-ops")
