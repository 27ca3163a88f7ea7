"""The Python API of a running mount: ask its daemon to prefetch, sync, report.

    from blobmount import Client

    client = Client("/mnt/data")
    client.prefetch(["datasets/train", "/mnt/data/models/m.bin"])  # one AzCopy job per entry
    client.sync()                                                  # pending uploads, now
    client.status()["downloads"]

Paths are relative to the mount point, or absolute paths under it. Every call is one
request on the daemon's control socket; the CLI uses these same calls.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from . import control
from .errors import NotUnderAMount, PrefetchFailed, SyncFailed
from .inventory import blobmount_mounts


def find_mount(path: str | os.PathLike) -> tuple[str, str]:
    """(mount point, path relative to it) of a path under a blobmount mount.

    The path is made absolute against the current folder (without resolving links:
    that would ask the mount); the deepest mount point holding it wins.
    """
    absolute = os.path.abspath(path)
    best = None
    for point in (record.mountpoint for record in blobmount_mounts()):
        if (absolute == point or absolute.startswith(point.rstrip("/") + "/")) and (
                best is None or len(point) > len(best)):
            best = point
    if best is None:
        raise NotUnderAMount(f"{path}: not under a blobmount mount point")
    return best, os.path.relpath(absolute, best) if absolute != best else ""


class Client:
    """Talks to the daemon serving `mountpoint`."""

    def __init__(self, mountpoint: str | os.PathLike, *, timeout: float | None = 30.0) -> None:
        self.mountpoint = os.path.abspath(mountpoint)
        self.timeout = timeout

    def relative(self, path: str | os.PathLike) -> str:
        """`path` relative to the mount point (absolute paths must be under it)."""
        text = os.fspath(path)
        if not os.path.isabs(text):
            return text.strip("/")
        absolute = os.path.abspath(text)
        if absolute == self.mountpoint:
            return ""
        if not absolute.startswith(self.mountpoint.rstrip("/") + "/"):
            raise NotUnderAMount(f"{text} is not under {self.mountpoint}")
        return absolute[len(self.mountpoint.rstrip("/")) + 1:]

    def _request(self, op: str, *, timeout: float | None | Literal["default"] = "default",
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 **args: Any) -> dict[str, Any]:
        wait = self.timeout if timeout == "default" else timeout
        return control.request(self.mountpoint, op, timeout=wait, on_progress=on_progress,
                               **args)

    def status(self) -> dict[str, Any]:
        """The daemon's view: entries, downloads, uploads, cache use (see `blobmount status`)."""
        return self._request("status")

    def sync(self, *, check: bool = True) -> list[dict[str, str]]:
        """Wait until every pending upload is in the container; the ones that failed
        (SyncFailed if any, unless not `check`)."""
        failed = self._request("sync", timeout=None)["failed"]
        if failed and check:
            raise SyncFailed(failed)
        return failed

    @contextlib.contextmanager
    def async_uploads(self, *, wait: bool = True) -> Iterator[None]:
        """Inside: every close() on the mount returns once the file is journaled, its
        upload left to the background, whatever the entries' `upload` mode says; the
        mode is the mount's, so this holds for every process writing there meanwhile.
        Leaving: each entry's own mode again, then (with `wait`) `sync()`, which raises
        SyncFailed if an upload failed. Left by an exception, it does not wait."""
        with control.held_request(self.mountpoint, "hold_async", timeout=self.timeout):
            yield
        if wait:
            self.sync()

    def prefetch(self, paths: Iterable[str | os.PathLike], *, check: bool = True,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 ) -> dict[str, Any]:
        """Download every uncached file at or under `paths` into the cache, in one AzCopy
        job per mount entry. Returns the counts (files, bytes, cached, downloaded,
        azcopy_jobs, failed); raises PrefetchFailed when something failed, unless not
        `check`. `on_progress` gets {files_done, files_total, bytes_done, bytes_total}.
        """
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        wanted = [self.relative(path) for path in paths]
        result = self._request("prefetch", timeout=None, on_progress=on_progress,
                               paths=wanted)
        if result["failed"] and check:
            raise PrefetchFailed(result)
        return result

    def cache_ls(self, path: str | os.PathLike = "") -> list[dict[str, Any]]:
        """The cached copies at or under `path`: path, size, state, last_access."""
        return self._request("cache_ls", path=self.relative(path))["files"]

    def evict(self, paths: Iterable[str | os.PathLike], *, force: bool = False,
              ) -> dict[str, Any]:
        """Drop the clean cached copies under `paths` (`force`: upload pending ones first).
        Returns {evicted, refused, bytes}."""
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        return self._request("cache_evict", timeout=None, force=force,
                             paths=[self.relative(path) for path in paths])

    def clear(self, *, force: bool = False) -> dict[str, Any]:
        """Drop every clean cached copy of the mount (see `evict`)."""
        return self.evict([""], force=force)

    def stats(self, path: str | os.PathLike = "") -> list[dict[str, Any]]:
        """Per entry (or the folder): files and bytes in the container, bytes cached,
        pending uploads."""
        return self._request("stats", timeout=None, path=self.relative(path))["entries"]
