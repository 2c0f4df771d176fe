"""Benchmarks to read, not tests: each runs as `python -m benchmarks.NAME` from the repository root."""
