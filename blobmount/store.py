"""The sqlite metadata store: the mount's tree and its cached files.

schema.sql documents every table and column. All SQL is here and parameterised; the
connection is used from the trio thread only (sqlite calls on a local file are short,
and one thread means no locking).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from .azure.listing import BlobItem
from .cachetables import CachedBlock as CachedBlock  # re-exported
from .cachetables import CachedFile as CachedFile  # re-exported
from .cachetables import CacheTables
from .errors import PermissionDenied
from .journal import Upload as Upload  # re-exported: the journal's rows
from .journal import UploadJournal
from .migrations import migrate
from .patchtables import Patch as Patch  # re-exported: patch.py's
from .patchtables import PatchTables
from .posix import Kept
from .transaction import transaction

ROOT_INODE = 1
#: the parent of files unlinked while open; no folder has this inode
ORPHANS = 0
#: blob names of orphans start with this: a NUL, so no real blob name can
ORPHAN_BLOB = "\0orphan/"
NEVER_STALE = float("inf")
#: Nodes kept read (Store.node) at most: beyond, they are all forgotten.
NODES_KEPT = 4096


@dataclass(frozen=True, slots=True)
class Node:
    inode: int
    parent: int
    name: str
    is_dir: bool
    entry_index: int | None  # which mount entry (config.mounts[i]); None: the mount's own
    blob: str | None
    size: int
    mtime_ns: int
    etag: str | None
    checked: float | None
    listed: float | None
    unuploaded: bool  # the cache holds bytes the container lacks (column `local`)
    mode: int | None = None      # permission bits kept in metadata; None: the defaults
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None  # None: the mtime
    ctime_ns: int = 0            # last change of bytes or attributes; 0: the mtime
    is_link: bool = False
    link: str | None = None      # a symlink's target, once read
    subfolders: int = 0          # folders: how many of its children are folders
    special: int = 0             # a FIFO's, socket's or device's type bits; 0: none
    rdev: int = 0                # a device's number

    def in_entry(self) -> EntryNode:
        """The node as one under a mount entry; EACCES for the mount table's own
        folders (the root and the folders above each entry), which have no blob."""
        if isinstance(self, EntryNode):
            return self
        raise PermissionDenied(f"{self.name or '/'}: the mount table's own folders have no blob")


@dataclass(frozen=True, slots=True)
class EntryNode(Node):
    """A node under a mount entry: the entry's own folder, and every folder and file
    in it. Its entry and blob are known (the store makes one whenever they are)."""

    entry_index: int
    blob: str


def _blob_columns(item: BlobItem) -> tuple[Any, ...]:
    """A listed blob's values for the nodes columns is_dir, blob, size, mtime_ns, etag,
    mode, uid, gid, atime_ns, ctime_ns, is_link, special, rdev."""
    return (int(item.is_dir), item.name, item.size, item.mtime_ns, item.etag, item.mode,
            item.uid, item.gid, item.atime_ns, item.ctime_ns, int(item.is_link),
            item.special, item.rdev)


@dataclass(frozen=True, slots=True)
class ListedItem:
    """One child of a folder as a listing found it: the name it shows under, and the
    blob (or virtual folder) behind it."""

    name: str
    item: BlobItem


_NODE_COLUMNS = ("inode, parent, name, is_dir, entry, blob, size, mtime_ns, etag, checked,"
                 " listed, local, mode, uid, gid, atime_ns, ctime_ns, is_link, link,"
                 " CASE WHEN is_dir THEN (SELECT COUNT(*) FROM nodes AS child"
                 " WHERE child.parent = nodes.inode AND child.is_dir = 1"
                 " AND child.inode != 1) ELSE 0 END, special, rdev")
def _node(row: tuple[Any, ...]) -> Node:
    (inode, parent, name, is_dir, entry, blob, size, mtime_ns, etag, checked, listed, unuploaded,
     mode, uid, gid, atime_ns, ctime_ns, is_link, link, subfolders, special, rdev) = row
    kind = Node if entry is None or blob is None else EntryNode
    return kind(inode, parent, name, bool(is_dir), entry, blob, size, mtime_ns, etag,
                checked, listed, bool(unuploaded), mode, uid, gid, atime_ns, ctime_ns,
                bool(is_link), link, subfolders, special, rdev)


def _maybe_node(row: tuple[Any, ...] | None) -> Node | None:
    return None if row is None else _node(row)


def _inode(cursor: sqlite3.Cursor) -> int:
    """The inode an INSERT ... RETURNING inode made."""
    return int(cursor.fetchone()[0])


Method = TypeVar("Method", bound=Callable[..., Any])


def _writes_tree(method: Method) -> Method:
    """A Store method that changes nodes: those read before are forgotten, before it
    and after it (so that none read in between outlives a rollback)."""
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        self._nodes.clear()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._nodes.clear()

    return cast(Method, wrapper)


class Store(CacheTables, UploadJournal, PatchTables):
    """The metadata of one mount, in one sqlite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        # One process holds a cache folder (its lock file), by this one connection: its
        # locks are taken once, not around every statement (3-5 us of each, and no -shm).
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across a process crash in WAL mode; the write path's
        # journal asks for FULL around its own commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        #: nodes as last read, by inode: each request reads a few several times (20 us
        #: a read, with its count of subfolders); any change of the tree forgets them all
        self._nodes: dict[int, Node] = {}
        migrate(self._db, path)
        self._load_patched()
        self._generation = 0

    def close(self) -> None:
        self._db.close()

    # -- the tree -----------------------------------------------------------------

    @_writes_tree
    def reset_tree(self) -> None:
        """Forget every inode and make a fresh root: a new mount starts here."""
        with transaction(self._db):
            self._db.execute("DELETE FROM nodes")
            self._db.execute(
                "INSERT INTO nodes (inode, parent, name, is_dir, listed, mtime_ns)"
                " VALUES (?, ?, '', 1, ?, ?)",
                (ROOT_INODE, ROOT_INODE, NEVER_STALE, time.time_ns()),
            )

    @_writes_tree
    def add_folder(self, parent: int, name: str, *, entry_index: int | None, blob: str | None,
                   listed: float | None, local: bool = False) -> int:
        """Add a folder that no listing produced (the mount table's own folders; those
        made here whose marker blob is still in the journal, `local`)."""
        return _inode(self._db.execute(
            "INSERT INTO nodes (parent, name, is_dir, entry, blob, listed, mtime_ns, local)"
            " VALUES (?, ?, 1, ?, ?, ?, ?, ?) RETURNING inode",
            (parent, name, entry_index, blob, listed, time.time_ns(), local),
        ))

    @_writes_tree
    def set_local_folder(self, inode: int) -> None:
        """A folder made here whose marker blob is still in the journal: listings that
        do not see it yet leave it alone (its upload's end clears this)."""
        self._db.execute("UPDATE nodes SET local = 1 WHERE inode = ? AND is_dir = 1", (inode,))

    def node(self, inode: int) -> Node | None:
        found = self._nodes.get(inode)
        if found is None:
            found = _maybe_node(self._db.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE inode = ?", (inode,)
            ).fetchone())
            if found is not None:
                if len(self._nodes) >= NODES_KEPT:
                    self._nodes.clear()
                self._nodes[inode] = found
        return found

    def entry_node(self, inode: int) -> EntryNode | None:
        """The node of a file, or of a folder under a mount entry (None: gone)."""
        node = self.node(inode)
        return None if node is None else node.in_entry()

    def child(self, parent: int, name: str) -> Node | None:
        return _maybe_node(self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent = ? AND name = ?", (parent, name)
        ).fetchone())

    def child_inodes(self, parent: int) -> list[int]:
        """Inodes of a folder's children, in name order (readdir's order)."""
        rows = self._db.execute(
            "SELECT inode FROM nodes WHERE parent = ? AND inode != ? ORDER BY name",
            (parent, ROOT_INODE),
        )
        return [row[0] for row in rows]

    def nodes(self, inodes: list[int]) -> list[Node]:
        """The nodes of `inodes`, in that order, skipping any that are gone."""
        found: dict[int, Node] = {}
        for start in range(0, len(inodes), 500):
            chunk = inodes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE inode IN ({marks})", chunk
            ):
                node = _node(row)
                found[node.inode] = node
        return [found[i] for i in inodes if i in found]

    def next_files(self, parent: int, after: str, *, limit: int,
                   max_size: int) -> list[EntryNode]:
        """The folder's files after `after` in name order, up to `max_size` bytes each,
        whose bytes are in the container (for read-ahead)."""
        return [_node(row).in_entry() for row in self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent = ? AND name > ? AND is_dir = 0"
            " AND local = 0 AND size <= ? ORDER BY name LIMIT ?",
            (parent, after, max_size, limit))]

    def begin_listing(self) -> int:
        """A new generation number for one listing of one folder."""
        self._generation += 1
        return self._generation

    @_writes_tree
    def add_listed(self, folder: Node, generation: int, items: Iterable[ListedItem],
                   now: float) -> None:
        """Record one page of a folder's listing. Known names keep their inode."""
        rows = [(folder.inode, listed.name, folder.entry_index, *_blob_columns(listed.item),
                 now, generation) for listed in items]
        with transaction(self._db):
            self._db.executemany(
                "INSERT INTO nodes (parent, name, entry, is_dir, blob, size, mtime_ns, etag,"
                " mode, uid, gid, atime_ns, ctime_ns, is_link, special, rdev, checked, seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (parent, name) DO UPDATE SET is_dir = excluded.is_dir,"
                " blob = excluded.blob, size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " link = CASE WHEN excluded.etag IS etag THEN link END,"
                " etag = excluded.etag, checked = excluded.checked, seen = excluded.seen,"
                " mode = excluded.mode, uid = excluded.uid, gid = excluded.gid,"
                " atime_ns = excluded.atime_ns, ctime_ns = excluded.ctime_ns,"
                " is_link = excluded.is_link, special = excluded.special, rdev = excluded.rdev,"
                " listed = CASE WHEN excluded.is_dir = is_dir THEN listed END"
                # Written here, or read after this listing began (an upload, a HEAD):
                # what the node says is newer than what the listing saw.
                " WHERE local = 0 AND (checked IS NULL OR checked <= excluded.checked)",
                rows,
            )

    @_writes_tree
    def finish_listing(self, folder: Node, generation: int, now: float) -> None:
        """Drop the children this listing did not see, and mark the folder listed.

        `now` is when the listing began: a child uploaded or made after that is kept, and
        so is one a later listing saw (a tree listing of a folder above, say).
        """
        with transaction(self._db):
            self._db.execute(
                "DELETE FROM nodes WHERE parent = ? AND seen < ? AND inode != ? AND local = 0"
                " AND (checked IS NULL OR checked <= ?)",
                (folder.inode, generation, ROOT_INODE, now),
            )
            self._db.execute("UPDATE nodes SET listed = ? WHERE inode = ?", (now, folder.inode))

    @_writes_tree
    def forget_listing(self, folder: int) -> None:
        """The folder's listing is not to be trusted: the next look lists it again."""
        self._db.execute("UPDATE nodes SET listed = NULL WHERE inode = ? AND listed IS NOT ?",
                         (folder, NEVER_STALE))

    @_writes_tree
    def update_file(self, inode: int, *, size: int, mtime_ns: int, etag: str | None,
                    checked: float) -> None:
        self._db.execute(
            "UPDATE nodes SET size = ?, mtime_ns = ?, etag = ?, checked = ? WHERE inode = ?",
            (size, mtime_ns, etag, checked, inode),
        )

    @_writes_tree
    def remove_node(self, inode: int) -> None:
        self._db.execute("DELETE FROM nodes WHERE inode = ?", (inode,))

    @_writes_tree
    def add_local_file(self, parent: Node, name: str, blob: str, *, size: int,
                       mtime_ns: int, kept: Kept | None = None) -> int:
        """Add (or turn into) a file whose bytes are only in the cache so far; `kept`:
        its mode and owner (None: those it had, if it was there)."""
        cursor = self._db.execute(
            "INSERT INTO nodes (parent, name, is_dir, entry, blob, size, mtime_ns, local,"
            " checked, mode, uid, gid, ctime_ns) VALUES (?, ?, 0, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)"
            " ON CONFLICT (parent, name) DO UPDATE SET is_dir = 0, blob = excluded.blob,"
            " size = excluded.size, mtime_ns = excluded.mtime_ns, local = 1, is_link = 0,"
            " special = 0, rdev = 0, link = NULL, ctime_ns = excluded.ctime_ns,"
            " mode = CASE WHEN ? THEN excluded.mode ELSE mode END,"
            " uid = CASE WHEN ? THEN excluded.uid ELSE uid END,"
            " gid = CASE WHEN ? THEN excluded.gid ELSE gid END"
            " RETURNING inode",
            (parent.inode, name, parent.entry_index, blob, size, mtime_ns, time.time(),
             kept.mode if kept else None, kept.uid if kept else None,
             kept.gid if kept else None, mtime_ns, *(kept is not None,) * 3),
        )
        return _inode(cursor)

    @_writes_tree
    def add_link(self, parent: Node, name: str, blob: str, *, target: str, kept: Kept,
                 mtime_ns: int, etag: str | None) -> int:
        """A symlink just put in the container."""
        cursor = self._db.execute(
            "INSERT INTO nodes (parent, name, is_dir, entry, blob, size, mtime_ns, etag,"
            " checked, uid, gid, ctime_ns, is_link, link)"
            " VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) RETURNING inode",
            (parent.inode, name, parent.entry_index, blob, len(target.encode("utf-8")), mtime_ns,
             etag, time.time(), kept.uid, kept.gid, mtime_ns, target),
        )
        return _inode(cursor)

    @_writes_tree
    def add_special(self, parent: Node, name: str, blob: str, *, kept: Kept, mtime_ns: int,
                    etag: str | None) -> int:
        """A FIFO, socket or device node just put in the container (an empty blob)."""
        cursor = self._db.execute(
            "INSERT INTO nodes (parent, name, is_dir, entry, blob, size, mtime_ns, etag,"
            " checked, mode, uid, gid, ctime_ns, special, rdev)"
            " VALUES (?, ?, 0, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING inode",
            (parent.inode, name, parent.entry_index, blob, mtime_ns, etag, time.time(), kept.mode,
             kept.uid, kept.gid, mtime_ns, kept.special, kept.rdev),
        )
        return _inode(cursor)

    @_writes_tree
    def set_link(self, inode: int, target: str) -> None:
        """A symlink's target, as read from its blob."""
        self._db.execute("UPDATE nodes SET link = ? WHERE inode = ?", (target, inode))

    @_writes_tree
    def set_kept(self, inode: int, *, mode: int | None, uid: int | None, gid: int | None,
                 atime_ns: int | None, mtime_ns: int, ctime_ns: int) -> None:
        """The node's mode, owner and times as just set here (checked now: a listing
        under way saw the old ones)."""
        self._db.execute(
            "UPDATE nodes SET mode = ?, uid = ?, gid = ?, atime_ns = ?, mtime_ns = ?,"
            " ctime_ns = ?, checked = ? WHERE inode = ?",
            (mode, uid, gid, atime_ns, mtime_ns, ctime_ns, time.time(), inode))

    @_writes_tree
    def touch(self, inode: int, when_ns: int) -> None:
        """A folder whose entries changed here: its mtime and ctime (not kept in the
        container; the next listing of its parent shows the container's)."""
        self._db.execute("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE inode = ?"
                         " AND is_dir = 1", (when_ns, when_ns, inode))

    @_writes_tree
    def grow_local(self, inode: int, *, end: int, mtime_ns: int) -> None:
        """A write here that ends at `end`: the file is at least that long (one
        statement, since every write of every file makes one)."""
        self._db.execute(
            "UPDATE nodes SET local = 1, size = max(size, ?), mtime_ns = ? WHERE inode = ?",
            (end, mtime_ns, inode),
        )

    @_writes_tree
    def set_local(self, inode: int, *, size: int, mtime_ns: int) -> None:
        self._db.execute(
            "UPDATE nodes SET local = 1, size = ?, mtime_ns = ? WHERE inode = ?",
            (size, mtime_ns, inode),
        )

    @_writes_tree
    def add_orphan(self, node: Node) -> None:
        """A file unlinked (or replaced) while open: its node, taken out of its folder
        already, comes back outside any folder, so no listing, lookup or upload finds
        it, and keeps its inode and attributes until its last handle closes."""
        self._db.execute(
            "INSERT OR REPLACE INTO nodes (inode, parent, name, is_dir, entry, blob, size,"
            " mtime_ns, etag, mode, uid, gid, atime_ns, ctime_ns, is_link, link, special,"
            " rdev) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (node.inode, ORPHANS, f"#{node.inode}", node.entry_index,
             f"{ORPHAN_BLOB}{node.inode}", node.size, node.mtime_ns, node.etag, node.mode,
             node.uid, node.gid, node.atime_ns, time.time_ns(), int(node.is_link), node.link,
             node.special, node.rdev))

    @_writes_tree
    def set_etag(self, entry_index: int, blob: str, etag: str) -> None:
        """The container holds these bytes of the file as version `etag` (a copy)."""
        self._db.execute(
            "UPDATE nodes SET etag = ?, checked = ? WHERE entry = ? AND blob = ? AND is_dir = 0",
            (etag, time.time(), entry_index, blob))

    @_writes_tree
    def set_unchanged(self, inode: int) -> None:
        """Opened for writing and closed unchanged: the node shows the blob again."""
        self._db.execute("UPDATE nodes SET local = 0 WHERE inode = ?", (inode,))

    @_writes_tree
    def set_mtime(self, inode: int, mtime_ns: int) -> None:
        self._db.execute("UPDATE nodes SET mtime_ns = ? WHERE inode = ?", (mtime_ns, inode))

    @_writes_tree
    def set_uploaded(self, entry_index: int, blob: str, *, size: int, mtime_ns: int,
                     etag: str) -> None:
        """The node of `blob` now shows the blob as uploaded (`blob` a folder's prefix:
        its marker went up, the folder is in the container)."""
        if blob.endswith("/"):
            self.set_folder_uploaded(entry_index, blob)
            return
        self._db.execute(
            "UPDATE nodes SET local = 0, size = ?, mtime_ns = ?, etag = ?, checked = ?"
            " WHERE entry = ? AND blob = ? AND is_dir = 0",
            (size, mtime_ns, etag, time.time(), entry_index, blob),
        )

    @_writes_tree
    def set_folder_uploaded(self, entry_index: int, prefix: str) -> None:
        """The folder of `prefix` has its marker blob in the container now."""
        self._db.execute("UPDATE nodes SET local = 0 WHERE entry = ? AND blob = ?"
                         " AND is_dir = 1", (entry_index, prefix))

    @_writes_tree
    def forget_local(self, entry_index: int, blob: str, folder_prefix: str) -> None:
        """Show the container's version of `blob` again, and relist its folder."""
        with transaction(self._db):
            self._db.execute(
                "UPDATE nodes SET local = 0, checked = NULL WHERE entry = ? AND blob = ?"
                " AND is_dir = 0", (entry_index, blob))
            self._db.execute(
                "UPDATE nodes SET listed = NULL WHERE entry = ? AND blob = ? AND is_dir = 1",
                (entry_index, folder_prefix))

    @_writes_tree
    def move_node(self, inode: int, parent: int, name: str, blob: str) -> None:
        self._db.execute(
            "UPDATE nodes SET parent = ?, name = ?, blob = ?, ctime_ns = ? WHERE inode = ?",
            (parent, name, blob, time.time_ns(), inode),
        )

    @_writes_tree
    def move_blobs_under(self, entry_index: int, old_prefix: str, new_prefix: str) -> None:
        """Rename the blobs of every node under a folder that moved (inodes stay)."""
        self._db.execute(
            "UPDATE nodes SET blob = ? || substr(blob, ?) WHERE entry = ?"
            " AND substr(blob, 1, ?) = ?",
            (new_prefix, len(old_prefix) + 1, entry_index, len(old_prefix), old_prefix),
        )
