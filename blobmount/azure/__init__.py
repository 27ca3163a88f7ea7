"""The storage client: one container of one account, through the azure-storage-blob SDK.

Its modules, in the order they import each other: `wire` (HTTP/1.1 by hand, for the lean
requests), `transport` (the SDK's transport, retries, metrics, error translation),
`lean` (bare requests signed here, each one's first try), `listing` (BlobItem, the List
Blobs parser, the `mtime` convention), `base` (what the parts of Remote share), `ranges`
(downloads), `staging` (snapshots and blocks), `sas` (the one SAS signer, AzCopy's
access), `protocol` (`RemoteContainer`: what the core calls on a Remote, for fakes to
declare), `container` (`Remote`, composing them), `aio` (`AsyncContainer`: the async
face the core calls, every blocking call under the daemon's one limiter). This module
re-exports what callers use.
"""

from .aio import AsyncContainer
from .container import Remote, file_md5
from .listing import (
    FOLDER_MARKER_KEY,
    MTIME_KEY,
    BlobItem,
    BlobProperties,
    format_mtime,
    parse_listing,
    parse_mtime,
)
from .protocol import RemoteContainer
from .ranges import RANGE_MD5_MAX, SMALL_GET_MAX, range_size  # decide.py's
from .sas import mint_sas
from .transport import RETRIES, backoff, translate_errors

__all__ = [
    "FOLDER_MARKER_KEY",
    "MTIME_KEY",
    "RANGE_MD5_MAX",
    "RETRIES",
    "SMALL_GET_MAX",
    "AsyncContainer",
    "BlobItem",
    "BlobProperties",
    "Remote",
    "RemoteContainer",
    "backoff",
    "file_md5",
    "format_mtime",
    "mint_sas",
    "parse_listing",
    "parse_mtime",
    "range_size",
    "translate_errors",
]
