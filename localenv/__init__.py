"""A local Kubernetes control plane and a fake Simacan Auth API, on this machine only.

Serves the demo (`scripts/demo`), the test tiers and the benchmarks alike; it is in neither the
wheel nor the image.
"""
