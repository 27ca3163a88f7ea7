"""Every size and tool decision of a transfer, as small pure functions.

SDK or AzCopy, whole or by blocks, one job or one per file, what read-ahead takes:
callers ask here, and each constant names the measurement that chose it (README,
"Benchmarks"; 2-core machine, loopback Azurite). The thresholds a user may change
(`sdk_download_max`, `sdk_upload_max`, `block_read_min`) come from the settings and
are passed in; their defaults are in config/model.py with the same reasons.
"""

from __future__ import annotations

from collections.abc import Sequence


def upload_jobs(paths: Sequence[str]) -> list[list[str]]:
    """The journaled uploads a batch window gathered, as jobs for the upload workers
    (one worker takes each job). One file each: an upload is conditional on the
    version it replaces (If-Match), which one AzCopy job of many files cannot be, and
    an AzCopy job costs about 2 s whatever it carries against milliseconds for a small
    SDK put; a large file is one AzCopy job of its own (upload_by_sdk)."""
    return [[path] for path in paths]
