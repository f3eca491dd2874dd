"""Migration without a broker: errors, reading Redis payloads, reports and the CLI.

The moves themselves run against real Redis and RabbitMQ in
``tests/integration/test_migrate.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from celery import Celery
from click.testing import CliRunner

import prioroute
from prioroute import Migration, MigrationError, Registry
from prioroute._cli import _migration_text, main
from prioroute._migrate import _decodes, _from_redis, _Message


@pytest.fixture(name="app")
def _app() -> Iterator[Celery]:
    app = Celery("mig", broker="amqp://ops:s3cret@127.0.0.1:1//", set_as_current=False)
    registry = Registry()

    @registry.low
    @app.task(name="mig.t", shared=False)
    def t() -> None: ...

    prioroute.configure(app, registry)
    yield app
    app.close()


class TestErrors:
    """Clear errors before anything moves."""

    def test_app_not_configured(self) -> None:
        app = Celery("plain", broker="memory://", set_as_current=False)
        with pytest.raises(MigrationError, match="app 'plain' is not configured by prioroute"):
            prioroute.migrate(app, "redis://127.0.0.1:1/0")

    def test_unknown_tier(self, app: Celery) -> None:
        with pytest.raises(
            MigrationError,
            match=r"unknown tier\(s\) 'urgent'; the app's tiers are 'critical', 'normal', 'low'",
        ):
            prioroute.migrate(app, "redis://127.0.0.1:1/0", tiers=["urgent"])

    def test_destination_of_another_kind_than_the_app(self, app: Celery) -> None:
        with pytest.raises(
            MigrationError,
            match=r"configured for its broker_url amqp://ops:\*\*@127.0.0.1:1// \(amqp\), "
            r"not for the destination redis://127.0.0.1:1/0",
        ):
            prioroute.migrate(app, "amqp://127.0.0.1:1//", destination="redis://127.0.0.1:1/0")

    def test_unreachable_source_masks_the_password(self, app: Celery) -> None:
        with pytest.raises(MigrationError) as error:
            prioroute.migrate(app, "amqp://ops:s3cret@127.0.0.1:1//", timeout=1)
        assert "cannot reach the source broker at amqp://ops:**@127.0.0.1:1//" in str(error.value)
        assert "s3cret" not in str(error.value)

    def test_recreate_a_queue_the_app_does_not_have(self, app: Celery) -> None:
        with pytest.raises(MigrationError, match="queue 'nope' is not one of app 'mig'"):
            prioroute.recreate_queue(app, "nope")

    def test_recreate_on_redis(self) -> None:
        app = Celery("r", broker="redis://127.0.0.1:1/0", set_as_current=False)
        prioroute.configure(app, Registry())
        with pytest.raises(MigrationError, match="only RabbitMQ queues have arguments"):
            prioroute.recreate_queue(app, "prioroute")


class TestRedisPayloads:
    """kombu's Redis message format, and what is not one."""

    def test_base64_body_and_headers(self) -> None:
        payload = json.dumps(
            {
                "body": base64.b64encode(b"[[1], {}, {}]").decode(),
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": {"task": "proj.t", "id": "1", "eta": "2026-12-04T10:00:00"},
                "properties": {"body_encoding": "base64", "priority": 2, "correlation_id": "1"},
            }
        ).encode()
        message = _from_redis(payload, "q")
        assert message.body == b"[[1], {}, {}]"
        assert message.task == "proj.t"
        assert message.headers["eta"] == "2026-12-04T10:00:00"  # kept as it was
        assert message.token == ("q", payload)

    def test_plain_body(self) -> None:
        message = _from_redis(json.dumps({"body": "x", "headers": {}}).encode(), "q")
        assert message.body == b"x"
        assert message.task is None

    @pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]"])
    def test_not_a_kombu_message(self, payload: bytes) -> None:
        message = _from_redis(payload, "q")
        assert (message.body, message.task) == (payload, None)


def test_report_text() -> None:
    result = Migration(
        source="redis://127.0.0.1:6379/0",
        destination="amqp://guest:**@127.0.0.1:5672//",
        dry_run=False,
        moved={"prioroute": 3},
        tiers={"low": 2, "critical": 1},
        recovered=1,
        left={"tier 'critical' not selected": 4},
        unplaceable={"no task 'x' in app 'proj'": 2},
        seconds=0.5,
    )
    assert result.as_dict()["total"] == 3
    assert _migration_text(result).splitlines() == [
        "moved 3 task(s) from redis://127.0.0.1:6379/0 to amqp://guest:**@127.0.0.1:5672// "
        "in 0.5 s (6/s)",
        "  published 1 left in flight by an interrupted run",
        "  to prioroute: 3",
        "  tier critical: 1",
        "  tier low: 2",
        "  left in the source, tier 'critical' not selected: 4",
        "  NOT MOVED, no task 'x' in app 'proj': 2 (still in the source)",
    ]


class TestCli:
    """`prioroute migrate`: usage and broker errors give exit codes 4 and 3."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "give --from URL"),
            (["--recreate", "q", "--from", "redis://"], "--recreate QUEUE takes no other"),
        ],
    )
    def test_usage(self, args: list[str], message: str) -> None:
        result = CliRunner().invoke(main, ["migrate", "examples.ansflow:app", *args])
        assert result.exit_code == 4, result.output
        assert message in result.output

    def test_unreachable(self) -> None:
        result = CliRunner().invoke(
            main,
            [
                "migrate",
                "examples.ansflow:app",
                "--from",
                "amqp://a:pw@127.0.0.1:1//",
                "--timeout",
                "1",
            ],
        )
        assert result.exit_code == 3, result.output
        assert "cannot reach the source broker at amqp://a:**@127.0.0.1:1//" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "decodes"),
    [
        (b"[[1], {}, {}]", "application/json", "utf-8", True),
        (b"{not json", "application/json", "utf-8", False),
        (b"[]", "application/json", "no-such-codec", False),
        (b"\x80\x04", "application/x-python-serialize", "binary", True),
    ],
)
def test_bodies_that_do_not_decode_are_not_moved(
    body: bytes, content_type: str, encoding: str, decodes: bool
) -> None:
    assert _decodes(_Message(body, {"task": "t"}, {}, content_type, encoding)) is decodes
