"""This operator beside what a user would install instead; run it as `python -m benchmarks.compare`."""
