"""Scenarios run against a real control plane by both the e2e tests and the benchmarks: the faults of
issue 8, the crash points and the hostile tenants; each measures from outside the operator."""
