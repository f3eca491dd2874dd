"""prioroute's benchmarks: `python -m benchmarks [scenario]`, or `nox -s bench`."""
