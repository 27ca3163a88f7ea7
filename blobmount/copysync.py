"""Downloaded copies made durable in bulk rather than one by one.

A download is installed in the cache with no fsync of its own (for a small file, two
disk flushes and a worker-thread trip of the few milliseconds it costs) and recorded
as unsynced (the store's `unsynced_copies`). While there are any, one syncfs(2) of
each cache file system every `cache_sync_interval` seconds makes them durable
together, and so does the end of a clean stop. A mount that finds some left follows
a daemon that did not stop cleanly, and drops those still clean: a crash of the
machine may have cut them, and they download again (`Files.recover`). The same sync
lets the journal rows of small written files drop the bytes they hold (journal.py):
the copy is durable by then, so the bytes are not kept twice for long while their
uploads wait.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import trio

from .cache import sync_file_system
from .config import MountEntry
from .store import Store
from .threads import Threads

log = logging.getLogger(__name__)


def _one_folder_per_file_system(folders: Sequence[Path]) -> list[Path]:
    found: dict[int, Path] = {}
    for folder in folders:
        try:
            found.setdefault(os.stat(folder).st_dev, folder)
        except FileNotFoundError:
            continue  # nothing was ever cached there
    return list(found.values())


def _sync_all(folders: Sequence[Path]) -> None:
    for folder in _one_folder_per_file_system(folders):
        sync_file_system(folder)


class CopySync:
    """Syncs the cache's file systems while copies wait for it."""

    def __init__(self, store: Store, entries: Sequence[MountEntry], threads: Threads,
                 interval: float) -> None:
        self.store = store
        self.folders = [entry.cache_dir for entry in entries]
        self.threads = threads
        self.interval = interval

    async def run(self) -> None:
        """Sync every `interval` seconds, until cancelled."""
        while True:
            await trio.sleep(self.interval)
            await self.sync()

    async def sync(self) -> None:
        """Make every copy recorded so far durable, and the written copies whose
        journal rows hold their bytes: those rows let them go. A sync that fails
        leaves both as they were, for the next try or the next mount."""
        mark = self.store.unsynced_mark()
        holding = self.store.rows_holding_bytes()
        if not mark and not holding:
            return
        try:
            await self.threads.run_sync(_sync_all, self.folders)
        except OSError as exc:
            log.warning("cannot sync the cache's file system: %s", exc)
            return
        self.store.synced_to(mark)
        self.store.copies_synced(holding)
