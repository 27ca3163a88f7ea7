"""A folder of a container, listed into the store: the blob names POSIX can show.

Blob names are not POSIX names. A name segment is shown only if POSIX can show it
(`shown_name`); the rest are hidden with one warning each. When a blob `a` and a
folder `a/` both exist, the folder keeps the name and the blob is hidden. Files whose
upload is still in the journal show whatever the listing saw.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence

from .azure import AsyncContainer, BlobItem
from .config import MountEntry
from .store import ListedItem, Node, Store

log = logging.getLogger(__name__)

NAME_MAX = 255


def shown_name(segment: str) -> str | None:
    """The name a blob name segment shows as, or None when POSIX cannot show it."""
    if segment in ("", ".", "..") or "\0" in segment or "/" in segment:
        return None
    try:
        encoded = segment.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return segment if len(encoded) <= NAME_MAX else None


def child_name(prefix: str, blob_name: str) -> str | None:
    """The shown name of `blob_name` (a listing item under `prefix`), or None."""
    if not blob_name.startswith(prefix):
        return None
    rest = blob_name[len(prefix):]
    if rest.endswith("/"):
        rest = rest[:-1]
    return shown_name(rest)


class Lister:
    """Lists one folder at a time (the namespace makes sure not twice at once)."""

    def __init__(self, store: Store, entries: Sequence[MountEntry],
                 remotes: Sequence[AsyncContainer]) -> None:
        self.store = store
        self.entries = entries
        self.remotes = remotes
        self._warned: set[str] = set()
        # Virtual folders (plain prefixes) have no time of their own: show the mount's.
        self._mounted_ns = time.time_ns()

    async def list(self, folder: Node) -> None:
        """List `folder` into the store: its children replace those it had."""
        assert folder.entry_index is not None  # the mount table's own folders never are
        remote = self.remotes[folder.entry_index]
        prefix = folder.blob or ""
        generation = self.store.begin_listing()
        now = time.time()
        # A blob `a` beside a folder `a/`: the folder wins. Azure lists the blob first
        # (name order), maybe a page earlier, and the folder's row then replaces the
        # file's (same parent and name); Azurite lists the folders first.
        file_blobs: dict[str, str] = {}
        folder_names: set[str] = set()
        # A folder's marker blob keeps its mode and owner; the prefix of the same name
        # (maybe on a later page) says nothing of them.
        markers: dict[str, BlobItem] = {}
        async for page in remote.list_pages(prefix):
            items: dict[str, ListedItem] = {}
            for item in page:
                name = child_name(prefix, item.name)
                if name is None:
                    self._warn_hidden(remote, item.name, "POSIX cannot show this name")
                    continue
                if item.is_dir:
                    folder_names.add(name)
                    if item.ctime_ns:  # a marker blob (a prefix has no Last-Modified)
                        markers[name] = item
                    item = markers.get(name, item)
                    if name in file_blobs:
                        self._warn_hidden(remote, file_blobs.pop(name),
                                          "a folder of the same name exists")
                elif name in folder_names:
                    self._warn_hidden(remote, item.name, "a folder of the same name exists")
                    continue
                else:
                    file_blobs[name] = item.name
                items[name] = ListedItem(name, dataclasses.replace(
                    item, mtime_ns=item.mtime_ns or self._mounted_ns))
            self.store.add_listed(folder, generation, list(items.values()), now)
        self.store.finish_listing(folder, generation, now)
        self._show_pending(folder, folder.entry_index, prefix)

    def _show_pending(self, folder: Node, index: int, prefix: str) -> None:
        """Files whose upload is still in the journal show with the bytes in the cache,
        whatever the listing saw: a write an earlier mount could not upload (the
        account refused it, say) is not hidden until it goes up."""
        if not self.store.upload_paths():
            return
        entry = self.entries[index]
        for row in self.store.uploads_under(entry.account.account_name, entry.container,
                                            prefix):
            first, slash, _ = row.blob[len(prefix):].partition("/")
            if shown_name(first) is None:
                continue
            node = self.store.child(folder.inode, first)
            if row.is_folder_marker and not slash:  # a folder made here, its marker due
                if node is None:
                    self.store.add_folder(folder.inode, first, entry_index=folder.entry_index,
                                          blob=f"{prefix}{first}/", listed=None, local=True)
                elif node.is_dir:
                    self.store.set_local_folder(node.inode)
                continue
            if slash:
                if node is None:  # a folder that only its pending files make
                    self.store.add_folder(folder.inode, first, entry_index=folder.entry_index,
                                          blob=f"{prefix}{first}/", listed=None)
            elif node is None or not (node.unuploaded or node.is_dir):
                try:
                    size = os.stat(row.path).st_size
                except FileNotFoundError:
                    continue
                self.store.add_local_file(folder, first, row.blob, size=size,
                                          mtime_ns=row.mtime_ns or self._mounted_ns)

    def _warn_hidden(self, remote: AsyncContainer, blob: str, why: str) -> None:
        key = f"{remote.label}/{blob}"
        if key not in self._warned:
            self._warned.add(key)
            log.warning("hiding blob %r of %s: %s", blob, remote.label, why)
