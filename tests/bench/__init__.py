"""`make bench`: end-to-end benchmarks of the gateway with real processes.

Run `python -m tests.bench [--only NAME] [--runs N]`; one JSON line per benchmark on stdout,
progress on stderr. What each figure measures: docs/benchmarks.md. Files are named
bench_*.py so that pytest does not collect them.
"""
