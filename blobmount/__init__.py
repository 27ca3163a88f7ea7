"""blobmount: Azure Blob Storage containers as one directory tree.

`blobmount.Client` (the Python API of a running mount, see client.py) is loaded on
first use, so importing any one module of the package never drags in the rest.
`blobmount.__version__` is the installed package's version: its metadata (setup.cfg)
is the one place the version is written.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

__all__ = ["Client", "__version__"]

#: The version shown when the package runs from a tree that was never installed.
UNKNOWN_VERSION = "0+unknown"


def _version() -> str:
    try:
        return metadata.version("blobmount")
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name in ("Client", "PrefetchFailed", "SyncFailed"):
        return getattr(importlib.import_module("blobmount.client"), name)
    raise AttributeError(f"module 'blobmount' has no attribute {name!r}")
