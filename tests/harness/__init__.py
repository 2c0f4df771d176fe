"""Tests of the harness itself (the fake Auth API, the emulator, the local control plane, PKI, node
images, the TCP proxy, the comparison's analysis): they run as their own CI stage, apart from the
product's tiers."""
