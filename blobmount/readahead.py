"""Folder read-ahead: a program walking a folder of small cold files finds the next
ones already on their way."""

from __future__ import annotations

from .azure import AsyncContainer
from .config import MountEntry
from .store import Node, Store
from .transfers import READ_AHEAD_MAX_SIZE, Downloads, Wanted


class ReadAhead:
    """Queues the next `files` small files of a folder after each cold open in it."""

    def __init__(self, store: Store, downloads: Downloads, files: int) -> None:
        self.store = store
        self.downloads = downloads
        self.files = files
        #: folder inode -> the last file read-ahead queued in it
        self._end: dict[int, str] = {}

    def after(self, node: Node, entry: MountEntry, remote: AsyncContainer, folder: str) -> None:
        """Fetch the files after `node` in its folder (shown as `folder`) in the
        background. A bounded cache spends at most a tenth of its limit on guesses, so
        that read-ahead never pushes out what was really read."""
        budget = entry.cache_max_bytes // 10 if entry.cache_max_bytes else None
        # Inside the window queued before, a walk moves it on by one file: only the
        # new end is looked at (the whole window each open cost 16 hashes and stats).
        end = self._end.get(node.parent, "")
        after, limit = (end, 1) if end > node.name else (node.name, self.files)
        wanted = []
        for sibling in self.store.next_files(
                node.parent, after, limit=limit, max_size=READ_AHEAD_MAX_SIZE):
            if budget is not None:
                budget -= sibling.size
                if budget < 0:
                    break
            wanted.append(Wanted(sibling.blob, sibling.size, sibling.etag,
                                 f"{folder}/{sibling.name}"))
            self._end[node.parent] = sibling.name
        self.downloads.read_ahead(entry, remote, wanted)
