"""Private RabbitMQ and Redis servers a test may stop and restart.

The suite's shared brokers (``scripts/brokers``) serve other tests at the same time, so a
test that takes a broker down starts its own: a RabbitMQ node and a Redis server on their own
ports and data directories, on 127.0.0.1 only, each stopped by the PID it was started with.
Restarting one keeps its data directory, so what it persisted survives.

Under CI a server that is missing or does not start fails the test; elsewhere the test is
skipped with the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests._ci import unavailable

INSTALL = "apt-get install -y rabbitmq-server redis-server"
START_TIMEOUT = 90.0  # seconds; a node boots in ~5 s, the bound only stops a hung start
STOP_TIMEOUT = 60.0


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not found; install with `{INSTALL}`")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _require_free(*ports: int) -> None:
    busy = [p for p in ports if port_open(p)]
    if busy:  # most likely a server a killed test run left behind: never ours to stop
        pytest.fail(f"port(s) {busy} on 127.0.0.1 are taken; stop whatever listens there")


def _alive(pid: int, name: str) -> bool:
    """Whether *pid* runs and is *name* (a zombie is not running: its parent may never reap
    it, e.g. a container's PID 1 that is no init)."""
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    except (OSError, ValueError):
        return False
    return name in status.get("Name", "") and not status.get("State", "").strip().startswith("Z")


def _stop_pid(pid: int, name: str) -> None:
    """SIGTERM *pid* if it still is *name*, wait for it to exit; SIGKILL it if it does not."""
    if not _alive(pid, name):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    stop = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < stop:
        if not _alive(pid, name):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    stop = time.monotonic() + 30
    while _alive(pid, name) and time.monotonic() < stop:
        time.sleep(0.1)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RabbitNode:
    """A RabbitMQ node of its own: its node name, AMQP and distribution ports, data dir.

    Debian's ``rabbitmq-server`` drops root for the ``rabbitmq`` user, so the data dir is a
    fresh directory under the system temp dir owned by that user (pytest's ``tmp_path`` is
    private to root). epmd is shared with the other nodes on the machine: left running.
    """

    def __init__(self, name: str = "prioroute-restart", port: int = 5682, dist_port: int = 25682):
        if os.getuid() != 0 and pwd.getpwuid(os.getuid()).pw_name != "rabbitmq":
            unavailable(
                "Debian's rabbitmq-server runs a node only for root or the rabbitmq user; "
                "run the test as root"
            )
        if os.getuid() == 0:
            try:
                pwd.getpwnam("rabbitmq")
            except KeyError:
                unavailable(f"no rabbitmq user; install RabbitMQ with `{INSTALL}`")
        self.node = f"{name}@localhost"
        self.port = port
        self.dist_port = dist_port
        self.url = f"amqp://guest:guest@127.0.0.1:{port}//"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.pid: int | None = None
        plugins = self.dir / "enabled_plugins"
        plugins.write_text("[].\n")  # no management plugin: no extra port to clash
        (self.dir / "rabbitmq.conf").write_text("# prioroute's broker restart test\n")
        if os.getuid() == 0:
            shutil.chown(self.dir, "rabbitmq", "rabbitmq")
            shutil.chown(plugins, "rabbitmq", "rabbitmq")
            shutil.chown(self.dir / "rabbitmq.conf", "rabbitmq", "rabbitmq")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
        }

    def _ctl(self, *args: str, timeout: float = 30) -> bool:
        try:
            result = subprocess.run(
                ["rabbitmqctl", "-q", "-n", self.node, *args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _log(self) -> str:
        return _tail(self.dir / "log" / f"{self.node}.log")

    def start(self) -> None:
        """Start the node (again, on the same data dir) and wait until it serves AMQP."""
        _require_free(self.port, self.dist_port)
        pid_file = self.dir / "rabbitmq.pid"
        pid_file.unlink(missing_ok=True)  # so the wait below sees this start's node
        with (self.dir / "start.out").open("ab") as out:
            subprocess.run(
                ["rabbitmq-server", "-detached"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        stop = time.monotonic() + START_TIMEOUT
        while self.pid is None and time.monotonic() < stop:
            with contextlib.suppress(OSError, ValueError):
                self.pid = int(pid_file.read_text())
            time.sleep(0.2)
        if self.pid is None:
            unavailable(f"RabbitMQ node {self.node} did not start: {_tail(self.dir / 'start.out')}")
        # await_startup gives up at once while the node is not registered with epmd yet.
        while not self._ctl("ping", timeout=15):
            if time.monotonic() > stop or not _alive(self.pid, "beam"):
                self.stop()
                unavailable(f"RabbitMQ node {self.node} did not answer a ping: {self._log()}")
            time.sleep(0.5)
        left = max(stop - time.monotonic(), 5)
        if not self._ctl("await_startup", "--timeout", str(int(left)), timeout=left + 5):
            self.stop()
            unavailable(f"RabbitMQ node {self.node} did not boot: {self._log()}")
        while not port_open(self.port):
            if time.monotonic() > stop:
                self.stop()
                unavailable(f"RabbitMQ node {self.node} serves no AMQP on {self.port}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the node by its PID (SIGTERM: a clean shutdown that keeps what it persisted)."""
        if self.pid is not None:
            _stop_pid(self.pid, "beam")
            self.pid = None

    def remove(self, keep_logs: Path | None = None) -> None:
        """Stop the node and delete its data dir, copying its logs to *keep_logs* first."""
        self.stop()
        if keep_logs is not None:
            with contextlib.suppress(OSError):
                shutil.copytree(self.dir / "log", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A Redis server of its own that persists every write (AOF, fsync always)."""

    def __init__(self, port: int = 6390):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="prioroute-restart-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        _require_free(self.port)
        argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        stop = time.monotonic() + START_TIMEOUT
        while not self._ping():
            if self.process.poll() is not None or time.monotonic() > stop:
                self.stop()
                unavailable(f"redis-server did not start: {_tail(self.dir / 'redis.log')}")
            time.sleep(0.1)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        """SIGTERM by PID: Redis fsyncs its AOF and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def remove(self, keep_logs: Path | None = None) -> None:
        """Stop the server and delete its data dir, copying its log to *keep_logs* first."""
        self.stop()
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(self.dir / "redis.log", keep_logs)
        shutil.rmtree(self.dir, ignore_errors=True)
