"""The sqlite metadata store: the mount's tree and its cached files.

schema.sql documents every table and column. All SQL is here and parameterised; the
connection is used from the trio thread only (sqlite calls on a local file are short,
and one thread means no locking).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .azure.listing import BlobItem
from .cachetables import CachedBlock as CachedBlock  # re-exported
from .cachetables import CachedFile as CachedFile  # re-exported
from .cachetables import CacheTables
from .decide import BLOCK
from .errors import PermissionDenied, StoreError
from .journal import Upload as Upload  # re-exported: the journal's rows
from .journal import UploadJournal
from .patchtables import Patch as Patch  # re-exported: patch.py's
from .patchtables import PatchTables
from .posix import Kept
from .transaction import statements, transaction

SCHEMA_VERSION = 8
#: The block size (decide.BLOCK) of stores that do not record theirs.
EARLIER_BLOCK = 512 * 1024
ROOT_INODE = 1
#: the parent of files unlinked while open; no folder has this inode
ORPHANS = 0
#: blob names of orphans start with this: a NUL, so no real blob name can
ORPHAN_BLOB = "\0orphan/"
NEVER_STALE = float("inf")


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
        self._migrate()
        self._load_patched()
        self._generation = 0

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """Bring the database to SCHEMA_VERSION, step by step; refuse a newer one."""
        version = self._schema_version()
        if version is not None and version > SCHEMA_VERSION:
            self._db.close()
            raise StoreError(f"{self.path} was written by a newer blobmount (schema {version});"
                             " upgrade blobmount or use another cache_dir")
        with transaction(self._db):
            if version == 1:
                # 1 -> 2: files written here and not uploaded yet (the write path).
                self._db.execute("ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0")
            if version == 2:
                # 2 -> 3: the file's mtime goes up with it as blob metadata. (Version 1
                # had no uploads table: schema.sql below makes it whole.)
                self._db.execute("ALTER TABLE uploads ADD COLUMN mtime_ns INTEGER")
            if version in (4, 5):
                # 5 -> 6 (and from 4, whose step to 5 adds no column): modes, owners,
                # symlinks and special nodes (kept as blob metadata); the upload journal
                # keeps the metadata to put with the bytes.
                self._db.execute("ALTER TABLE nodes ADD COLUMN mode INTEGER")
                self._db.execute("ALTER TABLE nodes ADD COLUMN uid INTEGER")
                self._db.execute("ALTER TABLE nodes ADD COLUMN gid INTEGER")
                self._db.execute("ALTER TABLE nodes ADD COLUMN atime_ns INTEGER")
                self._db.execute(
                    "ALTER TABLE nodes ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0")
                self._db.execute(
                    "ALTER TABLE nodes ADD COLUMN is_link INTEGER NOT NULL DEFAULT 0")
                self._db.execute("ALTER TABLE nodes ADD COLUMN link TEXT")
                self._db.execute(
                    "ALTER TABLE nodes ADD COLUMN special INTEGER NOT NULL DEFAULT 0")
                self._db.execute("ALTER TABLE nodes ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0")
            if version in (2, 3, 4, 5):
                self._db.execute("ALTER TABLE uploads ADD COLUMN metadata TEXT")
            if version is not None and 2 <= version <= 7:
                # 7 -> 8: a small file's row holds its bytes (journal.py).
                self._db.execute("ALTER TABLE uploads ADD COLUMN data BLOB")
            if version is not None and version < 4:
                # 3 -> 4: inode numbers are never reused (AUTOINCREMENT). The tree is
                # made anew at every mount, so the old table simply goes.
                self._db.execute("DROP TABLE IF EXISTS nodes")
            # 4 -> 5: cached_blocks, the blocks of partial copies; schema.sql below makes
            # the table (nothing older changes, so this step needs no statement).
            # 6 -> 7: patches and patch_blocks, edits of large copies uploaded by
            # blocks; made by schema.sql the same way.
            schema = resources.files("blobmount").joinpath("schema.sql").read_text()
            for statement in statements(schema):
                self._db.execute(statement)
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            self._resize_blocks()

    def _resize_blocks(self) -> None:
        """Blocks recorded at another BLOCK size (an earlier blobmount's; one with no
        record used 512 KiB) become blocks of this one. An edit's written blocks become
        every new block they overlap (so all their bytes are sent); a cached block
        larger than BLOCK becomes the blocks it holds, with no CRC-32 they could match
        (so each is fetched again before use); smaller ones go (fetched again)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'block_size'").fetchone()
        old = int(row[0]) if row else EARLIER_BLOCK
        if old != BLOCK:
            written = self._db.execute("SELECT path, start FROM patch_blocks").fetchall()
            self._db.execute("DELETE FROM patch_blocks")
            self._db.executemany(
                "INSERT OR IGNORE INTO patch_blocks (path, start) VALUES (?, ?)",
                [(path, new) for path, start in written
                 for new in range(start - start % BLOCK, start + old, BLOCK)])
            cached = self._db.execute(
                "SELECT path, start, size, last_access FROM cached_blocks").fetchall()
            self._db.execute("DELETE FROM cached_blocks")
            if old > BLOCK:
                self._db.executemany(
                    "INSERT INTO cached_blocks (path, start, size, crc32, last_access)"
                    " VALUES (?, ?, ?, -1, ?)",
                    [(path, new, min(BLOCK, start + size - new), used)
                     for path, start, size, used in cached
                     for new in range(start, start + size, BLOCK)])
            self._db.execute(
                "UPDATE cached_files SET size = (SELECT COALESCE(SUM(size), 0) FROM"
                " cached_blocks WHERE cached_blocks.path = cached_files.path)"
                " WHERE state = 'partial'")
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('block_size', ?)", (BLOCK,))

    def _schema_version(self) -> int | None:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None

    # -- the tree -----------------------------------------------------------------

    def reset_tree(self) -> None:
        """Forget every inode and make a fresh root: a new mount starts here."""
        with transaction(self._db):
            self._db.execute("DELETE FROM nodes")
            self._db.execute(
                "INSERT INTO nodes (inode, parent, name, is_dir, listed, mtime_ns)"
                " VALUES (?, ?, '', 1, ?, ?)",
                (ROOT_INODE, ROOT_INODE, NEVER_STALE, time.time_ns()),
            )

    def add_folder(self, parent: int, name: str, *, entry_index: int | None, blob: str | None,
                   listed: float | None, local: bool = False) -> int:
        """Add a folder that no listing produced (the mount table's own folders; those
        made here whose marker blob is still in the journal, `local`)."""
        return _inode(self._db.execute(
            "INSERT INTO nodes (parent, name, is_dir, entry, blob, listed, mtime_ns, local)"
            " VALUES (?, ?, 1, ?, ?, ?, ?, ?) RETURNING inode",
            (parent, name, entry_index, blob, listed, time.time_ns(), local),
        ))

    def set_local_folder(self, inode: int) -> None:
        """A folder made here whose marker blob is still in the journal: listings that
        do not see it yet leave it alone (its upload's end clears this)."""
        self._db.execute("UPDATE nodes SET local = 1 WHERE inode = ? AND is_dir = 1", (inode,))

    def node(self, inode: int) -> Node | None:
        return _maybe_node(self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE inode = ?", (inode,)
        ).fetchone())

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

    def finish_listing(self, folder: Node, generation: int, now: float) -> None:
        """Drop the children this listing did not see, and mark the folder listed.

        `now` is when the listing began: a child uploaded or made after that is kept.
        """
        with transaction(self._db):
            self._db.execute(
                "DELETE FROM nodes WHERE parent = ? AND seen != ? AND inode != ? AND local = 0"
                " AND (checked IS NULL OR checked <= ?)",
                (folder.inode, generation, ROOT_INODE, now),
            )
            self._db.execute("UPDATE nodes SET listed = ? WHERE inode = ?", (now, folder.inode))

    def forget_listing(self, folder: int) -> None:
        """The folder's listing is not to be trusted: the next look lists it again."""
        self._db.execute("UPDATE nodes SET listed = NULL WHERE inode = ? AND listed IS NOT ?",
                         (folder, NEVER_STALE))

    def update_file(self, inode: int, *, size: int, mtime_ns: int, etag: str | None,
                    checked: float) -> None:
        self._db.execute(
            "UPDATE nodes SET size = ?, mtime_ns = ?, etag = ?, checked = ? WHERE inode = ?",
            (size, mtime_ns, etag, checked, inode),
        )

    def remove_node(self, inode: int) -> None:
        self._db.execute("DELETE FROM nodes WHERE inode = ?", (inode,))

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

    def set_link(self, inode: int, target: str) -> None:
        """A symlink's target, as read from its blob."""
        self._db.execute("UPDATE nodes SET link = ? WHERE inode = ?", (target, inode))

    def set_kept(self, inode: int, *, mode: int | None, uid: int | None, gid: int | None,
                 atime_ns: int | None, mtime_ns: int, ctime_ns: int) -> None:
        """The node's mode, owner and times as just set here (checked now: a listing
        under way saw the old ones)."""
        self._db.execute(
            "UPDATE nodes SET mode = ?, uid = ?, gid = ?, atime_ns = ?, mtime_ns = ?,"
            " ctime_ns = ?, checked = ? WHERE inode = ?",
            (mode, uid, gid, atime_ns, mtime_ns, ctime_ns, time.time(), inode))

    def touch(self, inode: int, when_ns: int) -> None:
        """A folder whose entries changed here: its mtime and ctime (not kept in the
        container; the next listing of its parent shows the container's)."""
        self._db.execute("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE inode = ?"
                         " AND is_dir = 1", (when_ns, when_ns, inode))

    def grow_local(self, inode: int, *, end: int, mtime_ns: int) -> None:
        """A write here that ends at `end`: the file is at least that long (one
        statement, since every write of every file makes one)."""
        self._db.execute(
            "UPDATE nodes SET local = 1, size = max(size, ?), mtime_ns = ? WHERE inode = ?",
            (end, mtime_ns, inode),
        )

    def set_local(self, inode: int, *, size: int, mtime_ns: int) -> None:
        self._db.execute(
            "UPDATE nodes SET local = 1, size = ?, mtime_ns = ? WHERE inode = ?",
            (size, mtime_ns, inode),
        )

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

    def set_etag(self, entry_index: int, blob: str, etag: str) -> None:
        """The container holds these bytes of the file as version `etag` (a copy)."""
        self._db.execute(
            "UPDATE nodes SET etag = ?, checked = ? WHERE entry = ? AND blob = ? AND is_dir = 0",
            (etag, time.time(), entry_index, blob))

    def set_unchanged(self, inode: int) -> None:
        """Opened for writing and closed unchanged: the node shows the blob again."""
        self._db.execute("UPDATE nodes SET local = 0 WHERE inode = ?", (inode,))

    def set_mtime(self, inode: int, mtime_ns: int) -> None:
        self._db.execute("UPDATE nodes SET mtime_ns = ? WHERE inode = ?", (mtime_ns, inode))

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

    def set_folder_uploaded(self, entry_index: int, prefix: str) -> None:
        """The folder of `prefix` has its marker blob in the container now."""
        self._db.execute("UPDATE nodes SET local = 0 WHERE entry = ? AND blob = ?"
                         " AND is_dir = 1", (entry_index, prefix))

    def forget_local(self, entry_index: int, blob: str, folder_prefix: str) -> None:
        """Show the container's version of `blob` again, and relist its folder."""
        with transaction(self._db):
            self._db.execute(
                "UPDATE nodes SET local = 0, checked = NULL WHERE entry = ? AND blob = ?"
                " AND is_dir = 0", (entry_index, blob))
            self._db.execute(
                "UPDATE nodes SET listed = NULL WHERE entry = ? AND blob = ? AND is_dir = 1",
                (entry_index, folder_prefix))

    def move_node(self, inode: int, parent: int, name: str, blob: str) -> None:
        self._db.execute(
            "UPDATE nodes SET parent = ?, name = ?, blob = ?, ctime_ns = ? WHERE inode = ?",
            (parent, name, blob, time.time_ns(), inode),
        )

    def move_blobs_under(self, entry_index: int, old_prefix: str, new_prefix: str) -> None:
        """Rename the blobs of every node under a folder that moved (inodes stay)."""
        self._db.execute(
            "UPDATE nodes SET blob = ? || substr(blob, ?) WHERE entry = ?"
            " AND substr(blob, 1, ?) = ?",
            (new_prefix, len(old_prefix) + 1, entry_index, len(old_prefix), old_prefix),
        )
