from __future__ import annotations

import pickle

import pytest

import prioroute
from prioroute import DEFAULT_TIERS, Retry, Tier, TierError


class TestTier:
    """Tiers are frozen values that cannot be built invalid."""

    def test_defaults(self) -> None:
        assert [t.name for t in DEFAULT_TIERS.values()] == ["critical", "normal", "low"]
        urgencies = [t.urgency for t in DEFAULT_TIERS.values()]
        assert urgencies == sorted(urgencies, reverse=True)

    def test_frozen(self) -> None:
        tier = Tier("x", 1)
        with pytest.raises(AttributeError):
            tier.urgency = 3  # type: ignore[misc]

    @pytest.mark.parametrize("urgency", [-1, 10, 1.5, True, "9"])
    def test_urgency_out_of_range(self, urgency: object) -> None:
        with pytest.raises(TierError, match=r"tier 'x': urgency must be an int from 0 .* to 9"):
            Tier("x", urgency)  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["", "has space", "9lives", 3])
    def test_bad_name(self, name: object) -> None:
        with pytest.raises(TierError, match="tier name"):
            Tier(name, 1)  # type: ignore[arg-type]

    @pytest.mark.parametrize("queue", ["", "a b", "x*"])
    def test_bad_queue(self, queue: str) -> None:
        with pytest.raises(TierError, match="queue name"):
            Tier("x", 1, queue=queue)

    @pytest.mark.parametrize("rate", ["fast", "10/d", 10])
    def test_bad_rate_limit(self, rate: object) -> None:
        with pytest.raises(TierError, match="rate_limit"):
            Tier("x", 1, rate_limit=rate)  # type: ignore[arg-type]

    def test_bad_time_limit(self) -> None:
        with pytest.raises(TierError, match="time_limit must be >= 0"):
            Tier("x", 1, time_limit=-1)

    @pytest.mark.parametrize("value", [0, -1, 2.5, True, "5"])
    def test_bad_max_deliveries(self, value: object) -> None:
        with pytest.raises(
            TierError, match=rf"tier 'x': max_deliveries must be an int >= 1 or None, got {value!r}"
        ):
            Tier("x", 1, max_deliveries=value)  # type: ignore[arg-type]

    def test_hard_time_limit_requeues_when_acks_late(self) -> None:
        assert Tier("x", 1).task_options()["acks_on_timeout"] is False
        assert "acks_on_timeout" not in Tier("x", 1, acks_late=False).task_options()

    def test_retry_must_be_retry(self) -> None:
        with pytest.raises(TierError, match=r"retry must be a prioroute.Retry"):
            Tier("x", 1, retry={"max_retries": 3})  # type: ignore[arg-type]

    def test_task_options_never_route(self) -> None:
        tier = Tier("x", 1, time_limit=30, soft_time_limit=20, rate_limit="5/s")
        options = tier.task_options()
        assert options["time_limit"] == 30
        assert options["soft_time_limit"] == 20
        assert options["rate_limit"] == "5/s"
        assert options["acks_late"] is True
        assert options["reject_on_worker_lost"] is True
        assert not {"queue", "priority", "routing_key", "exchange"} & set(options)

    def test_unset_limits_are_not_emitted(self) -> None:
        assert not {"time_limit", "soft_time_limit", "rate_limit"} & set(
            Tier("x", 1).task_options()
        )

    def test_errors_are_value_errors(self) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - the stdlib type users catch
            Tier("x", 99)
        assert issubclass(TierError, prioroute.PriorouteError)


class TestRetry:
    """Retry maps onto Celery's retry options."""

    def test_celery_defaults(self) -> None:
        assert Retry().task_options() == {
            "max_retries": 3,
            "default_retry_delay": 180.0,
            "retry_backoff": False,
            "retry_backoff_max": 600,
            "retry_jitter": True,
        }

    def test_autoretry_for(self) -> None:
        retry = Retry(autoretry_for=ConnectionError)  # type: ignore[arg-type]
        assert retry.autoretry_for == (ConnectionError,)
        assert retry.task_options()["autoretry_for"] == (ConnectionError,)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"max_retries": -1}, "max_retries"),
            ({"max_retries": 1.5}, "max_retries"),
            ({"delay": -5}, "delay"),
            ({"backoff": -2}, "backoff"),
            ({"backoff": "yes"}, "backoff"),
            ({"autoretry_for": ("ValueError",)}, "exception classes"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(TierError, match=match):
            Retry(**kwargs)  # type: ignore[arg-type]

    def test_unlimited_retries(self) -> None:
        assert Retry(max_retries=None).task_options()["max_retries"] is None


class TestErrors:
    """Errors are picklable (they may cross a worker boundary) and print their message."""

    @pytest.mark.parametrize(
        "cls",
        [
            prioroute.PriorouteError,
            prioroute.TierError,
            prioroute.UnknownTierError,
            prioroute.RegistrationError,
            prioroute.ConfigConflictError,
            prioroute.QueueConflictError,
            prioroute.UnknownTaskError,
        ],
    )
    def test_pickle_and_str(self, cls: type[prioroute.PriorouteError]) -> None:
        error = cls("task 'x' is wrong; fix it")
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is cls
        assert str(again) == "task 'x' is wrong; fix it"

    def test_empty_message(self) -> None:
        assert str(prioroute.PriorouteError()) == ""
