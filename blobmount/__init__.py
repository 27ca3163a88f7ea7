"""blobmount: Azure Blob Storage containers as one directory tree.

`blobmount.Client` (the Python API of a running mount, see client.py) is loaded on
first use, so importing any one module of the package never drags in the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "PrefetchFailed", "SyncFailed"):
        return getattr(importlib.import_module("blobmount.client"), name)
    raise AttributeError(f"module 'blobmount' has no attribute {name!r}")
