"""Keeps a valid Simacan bearer token in a Kubernetes Secret."""

__version__ = "0.1.0"
