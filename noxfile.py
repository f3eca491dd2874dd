"""Development sessions: `nox` runs tests, lint, typing and docs; `nox -s bench` the benchmarks."""

from __future__ import annotations

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = True


def install(session: nox.Session, *groups: str, editable: bool = False) -> None:
    packages = [p for group in groups for p in nox.project.dependency_groups(PYPROJECT, group)]
    session.install(*(("-e", ".") if editable else (".",)), *packages)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests (starts RabbitMQ and Redis if they are down)."""
    install(session, "tests")
    session.run("bash", "scripts/brokers", "up", external=True)
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on src/ and on a typed usage file of the public API."""
    install(session, "typing")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors."""
    install(session, "docs")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "-q", "docs", "docs/_build/html"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: figures and ratios against baselines measured in the same run."""
    install(session, "bench")
    session.run("bash", "scripts/brokers", "up", external=True)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def cluster(session: nox.Session) -> None:
    """Fault test 4 (not in the default run): kill -9 the node that leads the quorum queues
    of a three-node RabbitMQ cluster on 127.0.0.1, which `scripts/cluster up` starts and
    `scripts/cluster down` stops afterwards."""
    install(session, "tests")
    session.run("bash", "scripts/cluster", "up", external=True)
    try:
        session.run(
            "pytest",
            "-p",
            "no:cacheprovider",
            "-s",
            "tests/cluster",
            "-m",
            "cluster",
            *session.posargs,
        )
    finally:
        session.run("bash", "scripts/cluster", "down", external=True)
