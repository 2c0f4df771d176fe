"""Keeps a valid Simacan bearer token in a Kubernetes Secret."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml's [project].version is the one place the version is written; the installed
    # package's metadata carries it (the image installs the wheel, a checkout `pip install -e .`).
    __version__ = version("simacan-token-operator")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
