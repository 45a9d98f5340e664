"""The benchmark scripts. Each runs as a module from the repository root (`python -m bench.NAME`,
like `python -m forge`), so `forge` and the shared helpers (`bench.common`) import without any
path set-up; bench/run and bench/harness.py start them that way."""
