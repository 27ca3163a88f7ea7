"""Folder read-ahead: a program walking a folder of small cold files finds the next
ones already on their way."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .azure import AsyncContainer
from .config import MountEntry
from .decide import READ_AHEAD_MAX_SIZE
from .store import Node, Store
from .transfers import Downloads, Wanted


@dataclass
class _Walk:
    """A walk through one folder: the files queued ahead of it, in name order, and how
    many it may have queued ahead at once (doubling while the walk keeps to them)."""

    window: int = 1
    queued: deque[str] = field(default_factory=deque)


class ReadAhead:
    """Queues the next small files of a folder while its opens walk it.

    A walk starts with two opens in a row of neighbours in name order (`cat *`, `tar c`,
    `cp -r`) and queues one file; each open of a queued file doubles how many are queued
    ahead, up to `files` (mountpoint-s3's prefetcher grows its window the same way). A
    program that picks its files (Python importing a package opens some modules, never
    its `.pyi` stubs) so costs few GETs it does not need."""

    def __init__(self, store: Store, downloads: Downloads, files: int) -> None:
        self.store = store
        self.downloads = downloads
        self.files = files
        self._walks: dict[int, _Walk] = {}  # folder inode -> its walk
        self._last_open: dict[int, str] = {}  # folder inode -> the last file opened in it

    def after(self, node: Node, entry: MountEntry, remote: AsyncContainer, folder: str) -> None:
        """Fetch the files after `node` in its folder (shown as `folder`) in the
        background, if the opens walk it. A bounded cache spends at most a tenth of its
        limit on guesses, so that read-ahead never pushes out what was really read."""
        last = self._last_open.get(node.parent)
        self._last_open[node.parent] = node.name
        walk = self._walks.get(node.parent)
        if walk is not None and walk.queued and node.name <= walk.queued[-1]:
            while walk.queued and walk.queued[0] <= node.name:
                walk.queued.popleft()
            walk.window = min(walk.window * 2, self.files)
        elif last is not None and self._follows(last, node):
            walk = self._walks[node.parent] = _Walk()
        else:
            return
        after = walk.queued[-1] if walk.queued else node.name
        budget = entry.cache_max_bytes // 10 if entry.cache_max_bytes else None
        wanted = []
        for sibling in self.store.next_files(node.parent, after,
                                             limit=max(0, walk.window - len(walk.queued)),
                                             max_size=READ_AHEAD_MAX_SIZE):
            if budget is not None:
                budget -= sibling.size
                if budget < 0:
                    break
            wanted.append(Wanted(sibling.blob, sibling.size, sibling.etag,
                                 f"{folder}/{sibling.name}"))
            walk.queued.append(sibling.name)
        self.downloads.read_ahead(entry, remote, wanted)

    def _follows(self, last: str, node: Node) -> bool:
        """Whether `node` is the file right after `last` in its folder (of those
        read-ahead would fetch)."""
        following = self.store.next_files(node.parent, last, limit=1,
                                          max_size=READ_AHEAD_MAX_SIZE)
        return bool(following) and following[0].name == node.name
