"""The cluster fault test runs only when asked for: ``nox -s cluster``, ``pytest -m cluster``
or ``pytest tests/cluster``.

It needs the three-node RabbitMQ cluster of ``scripts/cluster up``, which the default test run
does not start, so a plain ``pytest`` (``nox -s tests``) leaves it out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: needs the three-node RabbitMQ cluster of `scripts/cluster up` (run with "
        "`nox -s cluster`; fails, never skips, when CI is set)",
    )


def _asked_for(config: pytest.Config) -> bool:
    if "cluster" in (config.option.markexpr or ""):
        return True
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    keep, drop = [], []
    for item in items:
        (drop if HERE in item.path.parents else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
