"""raycert: certified-robust classifiers that stay accurate."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("raycert")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"
