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


#: A folder is first listed with everything under it, at any depth, by one request of
#: up to this many blobs: a package, a repository or a small dataset then comes whole
#: (`import` of three packages made 13 listings, one a folder; `ls -lR` of them 35).
#: A folder holding more is listed a level at a time, for that one request more; the
#: top of a mount entry always is, being where a large container is largest (the
#: request more cost `git clone` a tenth of its time against Azurite).
TREE_LISTING_MAX = 1000


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
        #: folders found to hold more than one tree listing: listed a level at a time
        self._large: set[int] = set()

    async def list(self, folder: Node) -> Sequence[int]:
        """List `folder` into the store: its children replace those it had. The inodes
        of the folders listed: this one, and those in it if its whole tree came."""
        assert folder.entry_index is not None  # the mount table's own folders never are
        remote = self.remotes[folder.entry_index]
        prefix = folder.blob or ""
        now = time.time()
        if folder.inode not in self._large and not self._entry_top(folder):
            items, whole = await remote.list_tree(prefix, TREE_LISTING_MAX)
            if whole:
                return self._record_tree(folder, remote, prefix, items, now)
            self._large.add(folder.inode)
            now = time.time()
        generation = self.store.begin_listing()
        level = _Level(self, remote, prefix)
        async for page in remote.list_pages(prefix):
            self.store.add_listed(folder, generation, level.add(page), now)
        self._finish(folder, generation, now, prefix)
        return [folder.inode]

    def _entry_top(self, folder: Node) -> bool:
        parent = self.store.node(folder.parent)
        return parent is None or parent.entry_index is None

    def _record_tree(self, top: Node, remote: AsyncContainer, prefix: str,
                     items: Sequence[BlobItem], now: float) -> Sequence[int]:
        """Every folder of a tree listed at once, each as its own listing would be."""
        levels = _levels(prefix, items)
        generation = self.store.begin_listing()
        listed = []
        pending = [(top, "")]
        while pending:
            folder, relative = pending.pop()
            children = _Level(self, remote, prefix + relative).add(levels.get(relative, []))
            self.store.add_listed(folder, generation, children, now)
            self._finish(folder, generation, now, prefix + relative)
            listed.append(folder.inode)
            for child in children:
                node = self.store.child(folder.inode, child.name) if child.item.is_dir else None
                if node is not None and node.is_dir:
                    pending.append((node, child.item.name[len(prefix):]))
        return listed

    def _finish(self, folder: Node, generation: int, now: float, prefix: str) -> None:
        assert folder.entry_index is not None
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


class _Level:
    """The children of one folder as its listing's pages give them: the names POSIX can
    show, a folder winning over a blob of its name."""

    def __init__(self, lister: Lister, remote: AsyncContainer, prefix: str) -> None:
        self._lister = lister
        self._remote = remote
        self._prefix = prefix
        # A blob `a` beside a folder `a/`: the folder wins. Azure lists the blob first
        # (name order), maybe a page earlier, and the folder's row then replaces the
        # file's (same parent and name); Azurite lists the folders first.
        self._file_blobs: dict[str, str] = {}
        self._folder_names: set[str] = set()
        # A folder's marker blob keeps its mode and owner; the prefix of the same name
        # (maybe on a later page) says nothing of them.
        self._markers: dict[str, BlobItem] = {}

    def add(self, page: Sequence[BlobItem]) -> list[ListedItem]:
        """The children one page names (a later page's may replace them)."""
        items: dict[str, ListedItem] = {}
        warn = self._lister._warn_hidden
        for item in page:
            name = child_name(self._prefix, item.name)
            if name is None:
                warn(self._remote, item.name, "POSIX cannot show this name")
                continue
            if item.is_dir:
                self._folder_names.add(name)
                if item.ctime_ns:  # a marker blob (a prefix has no Last-Modified)
                    self._markers[name] = item
                item = self._markers.get(name, item)
                if name in self._file_blobs:
                    warn(self._remote, self._file_blobs.pop(name),
                         "a folder of the same name exists")
            elif name in self._folder_names:
                warn(self._remote, item.name, "a folder of the same name exists")
                continue
            else:
                self._file_blobs[name] = item.name
            items[name] = ListedItem(name, dataclasses.replace(
                item, mtime_ns=item.mtime_ns or self._lister._mounted_ns))
        return list(items.values())


def _levels(prefix: str, items: Sequence[BlobItem]) -> dict[str, list[BlobItem]]:
    """A tree listing's blobs (under `prefix`, in name order) as each folder's listing
    with the delimiter '/' would give them, by the folder's path below `prefix`: its
    blobs, and a prefix item for each folder in it, where its first blob is."""
    levels: dict[str, list[BlobItem]] = {"": []}
    for item in items:
        # A marker comes back named as its folder ("a/"): its blob is "a".
        raw = item.name[:-1] if item.is_dir and item.name.endswith("/") else item.name
        relative = raw[len(prefix):]
        level = ""
        slash = relative.find("/")
        while slash >= 0:
            folder = relative[:slash + 1]
            if folder not in levels:
                levels[folder] = []
                levels[level].append(BlobItem(prefix + folder, True))
            level = folder
            slash = relative.find("/", slash + 1)
        levels[level].append(item)
    return levels

