"""The sqlite metadata store: the tree of one mount, listings, cached-file records,
and the schema version, each on a real database file under tmp_path."""

from __future__ import annotations

import contextlib
import math
import random
import sqlite3
import stat
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobmount import cachetables as cachetables_module
from blobmount import journal as journal_module
from blobmount import patchtables as patchtables_module
from blobmount import store as store_module
from blobmount.azure import BlobItem
from blobmount.decide import BLOCK
from blobmount.errors import BlobmountError
from blobmount.migrations import EARLIER_BLOCK, SCHEMA_VERSION
from blobmount.store import (
    NEVER_STALE,
    ROOT_INODE,
    ListedItem,
    Node,
    Store,
)


@contextlib.contextmanager
def raw_connection(db: Path) -> Iterator[sqlite3.Connection]:
    """A connection of the test's own, committed and closed at the end: a Store holds
    its database alone (locking_mode EXCLUSIVE), so none may stay open beside one."""
    raw = sqlite3.connect(db)
    try:
        with raw:
            yield raw
    finally:
        raw.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "meta" / "blobmount.sqlite"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    opened = Store(db)
    opened.reset_tree()
    yield opened
    opened.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A wall clock the store reads, set by the test: clock[0] = seconds."""
    now = [1_700_000_000.0]
    fake = types.SimpleNamespace(time=lambda: now[0], time_ns=time.time_ns)
    for module in (store_module, journal_module, cachetables_module):  # the store's tables
        monkeypatch.setattr(module, "time", fake)
    return now


def entry_folder(store: Store, name: str = "data", *, blob: str = "") -> Node:
    inode = store.add_folder(ROOT_INODE, name, entry_index=0, blob=blob, listed=None)
    node = store.node(inode)
    assert node is not None
    return node


def listed(name: str, is_dir: bool, blob: str, *fields, **named) -> ListedItem:
    """A listed child, its blob's fields as BlobItem takes them."""
    return ListedItem(name, BlobItem(blob, is_dir, *fields, **named))


def file(name: str, prefix: str = "", *, size: int = 0, etag: str | None = None,
         mtime_ns: int = 0) -> ListedItem:
    return listed(name, False, prefix + name, size, mtime_ns, etag or f"etag-{name}")


def folder(name: str, prefix: str = "") -> ListedItem:
    return listed(name, True, f"{prefix}{name}/")


def list_folder(store: Store, node: Node, *pages: list[ListedItem], now: float = 100.0) -> None:
    generation = store.begin_listing()
    for page in pages:
        store.add_listed(node, generation, page, now)
    store.finish_listing(node, generation, now)


def children(store: Store, parent: int) -> dict[str, Node]:
    return {node.name: node for node in store.nodes(store.child_inodes(parent))}


# --------------------------------------------------------------------------- the tree


def test_the_tree_is_not_in_the_database_file(db: Path) -> None:
    """Inodes live one mount: nodes are the connection's own (TEMP), so each write of a
    file changes no page of the file; a table an earlier version kept there goes."""
    raw = sqlite3.connect(db.parent.mkdir(parents=True) or db)
    raw.execute("CREATE TABLE nodes (inode INTEGER PRIMARY KEY, parent INTEGER)")
    raw.execute("INSERT INTO nodes VALUES (7, 1)")
    raw.commit()
    raw.close()
    opened = Store(db)
    opened.reset_tree()
    entry_folder(opened)
    opened.close()
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'nodes'").fetchall() == []
    raw.close()


def test_reset_tree_makes_the_root(store: Store) -> None:
    root = store.node(ROOT_INODE)
    assert root is not None
    assert (root.inode, root.parent, root.name, root.is_dir) == (ROOT_INODE, ROOT_INODE, "", True)
    assert root.listed == NEVER_STALE and math.isinf(root.listed)
    assert root.entry_index is None and root.blob is None
    assert root.mtime_ns > 0
    # The root is its own parent, yet never its own child.
    assert store.child_inodes(ROOT_INODE) == []


def test_reset_tree_forgets_every_other_node(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [file("a"), folder("b")])
    store.reset_tree()
    assert store.child_inodes(ROOT_INODE) == []
    assert store.node(data.inode) is None
    assert [n.inode for n in store.nodes(list(range(1, 10)))] == [ROOT_INODE]


def test_add_folder(store: Store) -> None:
    top = store.add_folder(ROOT_INODE, "team", entry_index=None, blob=None, listed=NEVER_STALE)
    inner = store.add_folder(top, "models", entry_index=3, blob="m/", listed=None)
    assert top != inner and ROOT_INODE not in (top, inner)
    node = store.child(top, "models")
    assert node is not None and node.inode == inner
    assert (node.parent, node.is_dir, node.entry_index, node.blob, node.listed) == (
        top, True, 3, "m/", None)
    assert node.size == 0 and node.etag is None
    team = store.node(top)
    assert team is not None and team.listed == NEVER_STALE and team.entry_index is None
    assert store.child_inodes(ROOT_INODE) == [top]
    assert store.child(ROOT_INODE, "models") is None
    with pytest.raises(sqlite3.IntegrityError):  # one name per folder
        store.add_folder(ROOT_INODE, "team", entry_index=None, blob=None, listed=None)


def vm_steps(store: Store, call: Callable[[], object]) -> int:
    """How many sqlite VM instructions `call` runs: the work its queries do."""
    counted = [0]

    def step() -> int:
        counted[0] += 1
        return 0
    store._db.set_progress_handler(step, 1)
    try:
        call()
    finally:
        store._db.set_progress_handler(None, 1)
    return counted[0]


def test_a_folders_node_costs_the_same_however_many_files_it_holds(store: Store) -> None:
    """Every answer about a folder carries its link count (2 + subfolders): counting
    them must not read its files (a lookup in a folder of 10,000 cost 2 ms)."""
    few, many = entry_folder(store, "few", blob="f/"), entry_folder(store, "many", blob="m/")
    list_folder(store, few, [file("a", "f/"), folder("x", "f/"), folder("y", "f/")])
    list_folder(store, many, [file(f"n{i}", "m/") for i in range(3000)]
                + [folder("x", "m/"), folder("y", "m/")])
    assert [store.node(inode).subfolders for inode in (few.inode, many.inode)] == [2, 2]
    few_steps = vm_steps(store, lambda: store.node(few.inode))
    many_steps = vm_steps(store, lambda: store.node(many.inode))
    assert many_steps < few_steps + 20  # without the index: 21,063 against 71


def test_finding_a_blobs_node_costs_the_same_however_many_nodes_there_are(
        store: Store) -> None:
    """Each upload's end finds its file's node by the blob's name."""
    data = entry_folder(store, blob="p/")
    list_folder(store, data, [file("a", "p/")])

    def uploaded() -> None:
        store.set_uploaded(0, "p/a", size=1, mtime_ns=1, etag="E2")
    few_steps = vm_steps(store, uploaded)
    list_folder(store, data, [file("a", "p/")] + [file(f"n{i}", "p/") for i in range(3000)])
    many_steps = vm_steps(store, uploaded)
    assert store.child(data.inode, "a").etag == "E2"
    assert many_steps < few_steps + 20


def test_a_listing_records_children(store: Store) -> None:
    data = entry_folder(store, blob="p/")
    list_folder(store, data,
                [file("a.txt", "p/", size=5, etag="E1", mtime_ns=7), folder("d", "p/")],
                now=123.0)
    kids = children(store, data.inode)
    assert sorted(kids) == ["a.txt", "d"]
    a = kids["a.txt"]
    assert (a.parent, a.is_dir, a.entry_index, a.blob, a.size, a.mtime_ns, a.etag, a.checked) == (
        data.inode, False, 0, "p/a.txt", 5, 7, "E1", 123.0)
    d = kids["d"]
    assert (d.is_dir, d.blob, d.listed, d.etag) == (True, "p/d/", None, None)
    listed = store.node(data.inode)
    assert listed is not None and listed.listed == 123.0


def test_relisting_keeps_inodes_drops_unseen_and_updates(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [file("a", size=1, etag="A1"), file("b"), folder("c"), file("x")],
                now=10.0)
    before = children(store, data.inode)
    # c was listed itself: relisting its parent keeps that (it is still a folder).
    c = before["c"]
    list_folder(store, c, [file("inner", "c/")], now=11.0)
    inner = store.child(c.inode, "inner")
    assert inner is not None

    list_folder(store, data,
                [file("a", size=99, etag="A2", mtime_ns=5), folder("c"), file("new"), folder("x")],
                now=20.0)
    after = children(store, data.inode)
    assert sorted(after) == ["a", "c", "new", "x"]
    assert store.node(before["b"].inode) is None  # not seen: gone
    for name in ("a", "c", "x"):
        assert after[name].inode == before[name].inode  # seen again: same inode
    assert after["new"].inode not in {n.inode for n in before.values()}
    a = after["a"]
    assert (a.size, a.etag, a.mtime_ns, a.checked) == (99, "A2", 5, 20.0)
    assert after["c"].listed == 11.0  # still a folder: its own listing still counts
    assert store.child(c.inode, "inner") == inner  # a parent's listing leaves it alone
    updated = store.node(data.inode)
    assert updated is not None and updated.listed == 20.0


def test_a_file_that_became_a_folder(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [file("x", size=42, etag="EX")], now=1.0)
    list_folder(store, data, [folder("x")], now=2.0)
    x = store.child(data.inode, "x")
    assert x is not None
    assert (x.is_dir, x.blob, x.size, x.etag, x.listed) == (True, "x/", 0, None, None)


def test_a_folder_that_became_a_file_is_no_longer_listed(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [folder("x")], now=1.0)
    x = store.child(data.inode, "x")
    assert x is not None
    list_folder(store, x, [file("in", "x/")], now=2.0)
    list_folder(store, data, [file("x", size=3)], now=3.0)
    now_file = store.child(data.inode, "x")
    assert now_file is not None
    assert (now_file.is_dir, now_file.blob, now_file.size, now_file.listed) == (
        False, "x", 3, None)


def test_a_listing_of_several_pages_keeps_every_page(store: Store) -> None:
    data = entry_folder(store)
    pages = [[file(f"f{page}-{i:03}") for i in range(50)] for page in range(4)]
    list_folder(store, data, *pages)
    assert len(store.child_inodes(data.inode)) == 200
    list_folder(store, data, pages[3])  # a shorter listing drops the rest
    assert [n.name for n in store.nodes(store.child_inodes(data.inode))] == [
        item.name for item in pages[3]]


def test_an_empty_listing_empties_the_folder_only(store: Store) -> None:
    one = entry_folder(store, "one")
    two = entry_folder(store, "two")
    list_folder(store, one, [file("a"), file("b")])
    list_folder(store, two, [file("a"), file("b")])
    list_folder(store, one)
    assert store.child_inodes(one.inode) == []
    assert len(store.child_inodes(two.inode)) == 2
    assert sorted(n.name for n in store.nodes(store.child_inodes(ROOT_INODE))) == ["one", "two"]


def test_hostile_names_are_data_not_sql(store: Store) -> None:
    data = entry_folder(store)
    names = ["'; DROP TABLE nodes; --", 'quote"d', "per%cent_", "new\nline", "back\\slash"]
    list_folder(store, data, [file(name) for name in names])
    assert sorted(children(store, data.inode)) == sorted(names)
    for name in names:
        node = store.child(data.inode, name)
        assert node is not None and node.blob == name


def test_child_inodes_are_in_name_order(store: Store) -> None:
    data = entry_folder(store)
    names = ["b", "B", "a", "ä", "Z", "_", "10", "9", "a b", "ab", "€", "😀", "\uffff"]
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)
    list_folder(store, data, [file(name) for name in shuffled])
    listed = [node.name for node in store.nodes(store.child_inodes(data.inode))]
    assert listed == sorted(names)  # code point order, as sqlite's BINARY collation on UTF-8


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    opened = Store(tmp_path_factory.mktemp("store") / "blobmount.sqlite")
    opened.reset_tree()
    yield opened
    opened.close()


_SEGMENT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="/\0"), min_size=1,
    max_size=20,
).filter(lambda name: name not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(names=st.sets(_SEGMENT, max_size=30))
def test_child_inodes_order_matches_python_sorting(shared_store: Store, names: set[str]) -> None:
    data = entry_folder(shared_store, f"folder-{shared_store.begin_listing()}")
    list_folder(shared_store, data, [file(name) for name in names])
    listed = [node.name for node in shared_store.nodes(shared_store.child_inodes(data.inode))]
    assert listed == sorted(names)


def test_nodes_keeps_order_and_skips_gone_inodes_past_one_chunk(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [file(f"f{i:05}", size=i) for i in range(1234)])
    inodes = store.child_inodes(data.inode)
    assert len(inodes) == 1234
    # Remove some from every chunk of 500, and ask in a scrambled order with
    # inodes that never existed mixed in.
    gone = set(inodes[::97])
    for inode in gone:
        store.remove_node(inode)
    wanted = inodes[:]
    random.Random(3).shuffle(wanted)
    wanted[10:10] = [10**9, 10**9 + 1]
    wanted.insert(777, 10**9 + 2)
    got = store.nodes(wanted)
    expected = [inode for inode in wanted if inode in set(inodes) - gone]
    assert [node.inode for node in got] == expected
    assert len(got) == 1234 - len(gone)
    assert all(node.size == int(node.name[1:]) for node in got)
    assert store.nodes([]) == []


def test_update_file_and_remove_node(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [file("f", size=1, etag="E1")])
    f = store.child(data.inode, "f")
    assert f is not None
    store.update_file(f.inode, size=8, mtime_ns=9, etag="E2", checked=55.0)
    updated = store.node(f.inode)
    assert updated is not None
    assert (updated.size, updated.mtime_ns, updated.etag, updated.checked) == (8, 9, "E2", 55.0)
    store.remove_node(f.inode)
    assert store.node(f.inode) is None and store.child(data.inode, "f") is None


# --------------------------------------------------------------------------- cached files


def test_cached_file_put_touch_drop(store: Store, clock: list[float]) -> None:
    assert store.cached_file("/c/blobs/aa/aa1") is None
    store.put_cached_file("/c/blobs/aa/aa1", blob="dir/a.bin", etag="E1", size=10)
    record = store.cached_file("/c/blobs/aa/aa1")
    assert record is not None
    assert (record.path, record.blob, record.etag, record.size, record.state,
            record.last_access) == ("/c/blobs/aa/aa1", "dir/a.bin", "E1", 10, "clean", clock[0])

    clock[0] += 60
    store.touch_cached_file("/c/blobs/aa/aa1")
    touched = store.cached_file("/c/blobs/aa/aa1")
    assert touched is not None and touched.last_access == clock[0]
    assert (touched.etag, touched.size) == ("E1", 10)

    # A new copy of the same path replaces the record.
    store.put_cached_file("/c/blobs/aa/aa1", blob="dir/a.bin", etag="E2", size=12)
    replaced = store.cached_file("/c/blobs/aa/aa1")
    assert replaced is not None and (replaced.etag, replaced.size) == ("E2", 12)

    store.drop_cached_file("/c/blobs/aa/aa1")
    assert store.cached_file("/c/blobs/aa/aa1") is None
    store.drop_cached_file("/c/blobs/aa/aa1")  # dropping twice is harmless
    store.touch_cached_file("/nowhere")  # and so is touching a missing one
    assert store.cached_file("/nowhere") is None


def test_cached_bytes(store: Store) -> None:
    assert store.cached_bytes() == 0
    assert store.cached_bytes(under="/c1/") == 0
    store.put_cached_file("/c1/blobs/aa/1", blob="a", etag="E", size=100)
    store.put_cached_file("/c1/blobs/bb/2", blob="b", etag="E", size=20)
    store.put_cached_file("/c2/blobs/aa/3", blob="c", etag="E", size=3)
    store.put_cached_file("/c1%/blobs/aa/4", blob="d", etag="E", size=4000)
    store.put_cached_file("/ç/blobs/aa/5", blob="e", etag="E", size=50000)
    assert store.cached_bytes() == 54123
    assert store.cached_bytes(under="/c1/") == 120
    assert store.cached_bytes(under="/c1/blobs/bb/") == 20
    assert store.cached_bytes(under="/c2/") == 3
    assert store.cached_bytes(under="/c_/") == 0  # no LIKE wildcards
    assert store.cached_bytes(under="/c1%/") == 4000
    assert store.cached_bytes(under="/ç/") == 50000  # characters, not bytes
    assert store.cached_bytes(under="/c3/") == 0
    assert store.cached_bytes(under="") == 54123
    store.drop_cached_file("/c1/blobs/aa/1")
    assert store.cached_bytes(under="/c1/") == 20


# --------------------------------------------------------------------------- across mounts


def test_reopening_keeps_cached_files_and_starts_with_no_tree(db: Path) -> None:
    first = Store(db)
    first.reset_tree()
    data = entry_folder(first)
    list_folder(first, data, [file("a", size=3)])
    first.put_cached_file("/c/blobs/aa/1", blob="a", etag="E", size=3)
    first.close()

    second = Store(db)  # the next mount
    try:
        assert second.cached_file("/c/blobs/aa/1") is not None
        # The tree lived for the first mount only (a TEMP table, the connection's own).
        assert second.child(data.inode, "a") is None
        second.reset_tree()
        assert second.child_inodes(ROOT_INODE) == []
        assert second.node(data.inode) is None
        record = second.cached_file("/c/blobs/aa/1")
        assert record is not None and (record.blob, record.etag, record.size) == ("a", "E", 3)
        assert second.cached_bytes() == 3
        # A fresh tree after a reopen lists correctly (generations start over).
        again = entry_folder(second)
        list_folder(second, again, [file("b")])
        list_folder(second, again, [file("c")])
        assert sorted(children(second, again.inode)) == ["c"]
    finally:
        second.close()


def _meta(db: Path | Store) -> dict[str, str]:
    """The meta table, read by a connection of the test's own, or by the open Store's."""
    if isinstance(db, Store):
        return dict(db._db.execute("SELECT key, value FROM meta").fetchall())
    with raw_connection(db) as raw:
        return dict(raw.execute("SELECT key, value FROM meta").fetchall())


def _tables(db: Path | Store) -> set[str]:
    query = "SELECT name FROM sqlite_master WHERE type='table'"
    if isinstance(db, Store):
        return {row[0] for row in db._db.execute(query)}
    with raw_connection(db) as raw:
        return {row[0] for row in raw.execute(query)}


def test_schema_version_is_recorded_once(db: Path) -> None:
    Store(db).close()
    expected = {"schema_version": str(SCHEMA_VERSION), "block_size": str(BLOCK)}
    assert _meta(db) == expected
    assert {"meta", "cached_files"} <= _tables(db)
    assert "nodes" not in _tables(db)  # the connection's own (TEMP)
    Store(db).close()
    assert _meta(db) == expected


def test_blocks_of_an_earlier_block_size_become_blocks_of_this_one(db: Path) -> None:
    """A store of 512 KiB blocks (it records no size): an edit's written block becomes
    every block it overlaps; a cached block, the blocks it holds, each with a CRC-32
    no bytes match (fetched again before use), the copy's size unchanged."""
    earlier = EARLIER_BLOCK
    assert earlier % BLOCK == 0 and earlier > BLOCK
    store = Store(db)
    store.put_cached_file("/c/blobs/p", blob="big", etag="E", size=0, state="partial")
    store.add_cached_blocks("/c/blobs/p", [(0, earlier, 7), (earlier, 100, 8)])
    store._db.execute("INSERT INTO patch_blocks (path, start) VALUES ('/c/blobs/p', ?)",
                      (earlier,))
    store._db.execute("DELETE FROM meta WHERE key = 'block_size'")
    store._db.commit()
    store.close()
    store = Store(db)
    try:
        blocks = store.cached_blocks_in("/c/blobs/p", 0, 2 * earlier)
        assert blocks == {**dict.fromkeys(range(0, earlier, BLOCK), -1), earlier: -1}
        assert store.cached_file("/c/blobs/p").size == earlier + 100
        assert store.patch_blocks("/c/blobs/p") == set(range(earlier, 2 * earlier, BLOCK))
    finally:
        store.close()


def test_the_database_is_in_wal_mode(db: Path) -> None:
    Store(db).close()
    with raw_connection(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _newer_database(db: Path) -> None:
    """A database a later blobmount wrote: version SCHEMA_VERSION + 1, other tables."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with raw_connection(db) as raw:
        raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        raw.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
        raw.execute("CREATE TABLE tree_v2 (id INTEGER PRIMARY KEY)")
    raw.close()


def test_a_newer_database_is_refused(db: Path) -> None:
    _newer_database(db)
    with pytest.raises(Exception, match="newer"):
        Store(db)
    assert _meta(db) == {"schema_version": str(SCHEMA_VERSION + 1)}


def test_a_refused_newer_database_is_left_untouched(db: Path) -> None:
    _newer_database(db)
    with pytest.raises(Exception, match="newer"):
        Store(db)
    assert _tables(db) == {"meta", "tree_v2"}


def test_a_newer_database_is_a_user_error(db: Path) -> None:
    _newer_database(db)
    with pytest.raises(BlobmountError, match="newer"):
        Store(db)


#: The tables of schema version 1 as commits 1f6a095..942d74a made them (before `local`).
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nodes (
    inode INTEGER PRIMARY KEY, parent INTEGER NOT NULL, name TEXT NOT NULL,
    is_dir INTEGER NOT NULL, entry INTEGER, blob TEXT,
    size INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL DEFAULT 0, etag TEXT,
    checked REAL, listed REAL, seen INTEGER NOT NULL DEFAULT 0, UNIQUE (parent, name)
);
CREATE TABLE cached_files (
    path TEXT PRIMARY KEY, blob TEXT NOT NULL, etag TEXT NOT NULL, size INTEGER NOT NULL,
    state TEXT NOT NULL, last_access REAL NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO nodes (inode, parent, name, is_dir, listed) VALUES (1, 1, '', 1, 9e999);
INSERT INTO nodes (inode, parent, name, is_dir, entry, blob) VALUES (2, 1, 'old', 1, 0, '');
INSERT INTO cached_files VALUES ('/c/blobs/aa/1', 'a', 'E', 3, 'clean', 1.0);
"""


def test_a_version_1_database_is_migrated_and_keeps_its_cache(db: Path) -> None:
    """A cache folder outlives upgrades: a database the first release wrote must open
    and work with every later schema (schema.sql: "store.py migrates older ones
    forward, step by step"), keeping its cached-file records."""
    db.parent.mkdir(parents=True)
    with raw_connection(db) as raw:
        raw.executescript(SCHEMA_V1)
    raw.close()
    upgraded = Store(db)
    try:
        assert _meta(upgraded)["schema_version"] == str(SCHEMA_VERSION)
        record = upgraded.cached_file("/c/blobs/aa/1")
        assert record is not None and (record.blob, record.etag, record.size) == ("a", "E", 3)
        # The tree is made anew at every mount; the migration made its table anew too.
        assert upgraded.child(ROOT_INODE, "old") is None
        upgraded.reset_tree()
        data = entry_folder(upgraded)
        list_folder(upgraded, data, [file("a", size=3, etag="E"), folder("d")])
        assert sorted(children(upgraded, data.inode)) == ["a", "d"]
        assert upgraded.cached_bytes() == 3
    finally:
        upgraded.close()


#: The uploads table of schema version 2 (fa9e6fb..895df99), before `mtime_ns`.
SCHEMA_V2_UPLOADS = """
CREATE TABLE uploads (
    path TEXT PRIMARY KEY, account TEXT NOT NULL, container TEXT NOT NULL,
    blob TEXT NOT NULL, base_etag TEXT NOT NULL, version INTEGER NOT NULL,
    queued REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0, last_error TEXT
);
INSERT INTO uploads (path, account, container, blob, base_etag, version, queued)
    VALUES ('/c/blobs/bb/2', 'acct', 'cont', 'dir/f.txt', '', 3, 5.0);
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


def test_a_version_2_journal_is_migrated_and_keeps_its_uploads(db: Path) -> None:
    """A crash leaves rows in the journal; an upgraded blobmount must still upload them."""
    db.parent.mkdir(parents=True)
    with raw_connection(db) as raw:
        raw.executescript(SCHEMA_V1)
        raw.execute("ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0")
        raw.executescript(SCHEMA_V2_UPLOADS)
    raw.close()
    upgraded = Store(db)
    try:
        assert _meta(upgraded)["schema_version"] == str(SCHEMA_VERSION)
        row = upgraded.upload("/c/blobs/bb/2")
        assert row is not None
        assert (row.blob, row.version, row.mtime_ns) == ("dir/f.txt", 3, None)
        version = upgraded.queue_upload("/c/blobs/bb/2", account="acct", container="cont",
                                        blob="dir/f.txt", base_etag="", mtime_ns=42)
        assert version == 4
        assert upgraded.upload("/c/blobs/bb/2").mtime_ns == 42
    finally:
        upgraded.close()


@pytest.mark.parametrize("version", ["4", "5"])
def test_a_version_4_or_5_database_is_migrated_keeping_its_journal(
        db: Path, version: str) -> None:
    """5 -> 6 (and 4, whose step to 5 adds only a table) adds the metadata to the
    journal: a row journaled before still goes up (with no metadata). The old tree
    goes (each mount makes its own), and the new one keeps modes, owners and links."""
    db.parent.mkdir(parents=True)
    with raw_connection(db) as raw:
        raw.executescript(SCHEMA_V1)
        raw.execute("ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0")
        raw.executescript(SCHEMA_V2_UPLOADS)
        raw.execute("ALTER TABLE uploads ADD COLUMN mtime_ns INTEGER")
        raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    raw.close()
    upgraded = Store(db)
    try:
        assert _meta(upgraded)["schema_version"] == str(SCHEMA_VERSION)
        row = upgraded.upload("/c/blobs/bb/2")
        assert (row.blob, row.version, row.metadata) == ("dir/f.txt", 3, None)
        upgraded.queue_upload("/c/blobs/bb/2", account="acct", container="cont",
                              blob="dir/f.txt", base_etag="", metadata='{"mode": "100600"}')
        assert upgraded.upload("/c/blobs/bb/2").metadata == '{"mode": "100600"}'
        assert upgraded.child(ROOT_INODE, "old") is None
        upgraded.reset_tree()
        new = upgraded.node(entry_folder(upgraded).inode)
        assert new is not None and (new.mode, new.uid, new.is_link) == (None, None, False)
        assert (new.special, new.rdev) == (0, 0)
    finally:
        upgraded.close()


def test_listed_modes_owners_and_links_reach_the_nodes(store: Store) -> None:
    data = entry_folder(store)
    list_folder(store, data, [
        listed("f", False, "f", 1, 5, "E1", mode=0o600, uid=7, gid=8, atime_ns=3,
                   ctime_ns=9),
        listed("l", False, "l", 4, 5, "E2", is_link=True),
        listed("d", True, "d/", mode=0o750), listed("e", True, "e/"),
        listed("c", False, "c", 0, 5, "E4", mode=0o600, special=stat.S_IFCHR, rdev=0x103),
    ])
    found = children(store, data.inode)
    assert (found["c"].special, found["c"].rdev) == (stat.S_IFCHR, 0x103)
    assert found["f"].special == 0
    assert (found["f"].mode, found["f"].uid, found["f"].gid) == (0o600, 7, 8)
    assert (found["f"].atime_ns, found["f"].ctime_ns) == (3, 9)
    assert found["l"].is_link and found["l"].link is None
    assert found["d"].mode == 0o750
    assert store.node(data.inode).subfolders == 2
    store.set_link(found["l"].inode, "target")
    list_folder(store, data, [listed("l", False, "l", 6, 5, "E2", is_link=True)])
    assert store.node(found["l"].inode).link == "target"  # same version: kept
    list_folder(store, data, [listed("l", False, "l", 6, 5, "E3", is_link=True)])
    assert store.node(found["l"].inode).link is None  # a new version: read again


def test_the_journal_keeps_the_latest_mtime_and_the_first_base(store: Store) -> None:
    first = store.queue_upload("/p", account="a", container="c", blob="b", base_etag="E1",
                               mtime_ns=1)
    second = store.queue_upload("/p", account="a", container="c", blob="b", base_etag="E2",
                                mtime_ns=2)
    assert (first, second) == (1, 2)
    row = store.upload("/p")
    assert (row.base_etag, row.mtime_ns, row.version) == ("E1", 2, 2)


def test_a_listing_under_way_keeps_what_was_uploaded_meanwhile(store: Store) -> None:
    """A listing that began before an upload finished neither drops the new file nor
    puts back the attributes it saw before."""
    data = entry_folder(store)
    list_folder(store, data, [file("old", size=1, etag="E1")], now=100.0)
    generation = store.begin_listing()  # a listing begins at t=200 ...
    inode = store.add_local_file(data, "new", "new", size=5, mtime_ns=1)
    store.set_uploaded(0, "new", size=5, mtime_ns=1, etag="N1")  # ... uploads finish ...
    store.set_uploaded(0, "old", size=9, mtime_ns=2, etag="E2")
    store.add_listed(data, generation, [file("old", size=1, etag="E1")], 200.0)
    store.finish_listing(data, generation, 200.0)  # ... and it ends, not having seen them
    found = children(store, data.inode)
    assert sorted(found) == ["new", "old"] and found["new"].inode == inode
    assert (found["old"].size, found["old"].etag) == (9, "E2")
    # The next listing, begun after the uploads, is the truth again.
    list_folder(store, data, [file("old", size=9, etag="E2")], now=time.time() + 1)
    assert sorted(children(store, data.inode)) == ["old"]
    store.forget_listing(data.inode)
    assert store.node(data.inode).listed is None


def test_uploads_under_a_prefix_of_one_container(store: Store) -> None:
    for path, container, blob in [("/1", "c", "a/x"), ("/2", "c", "a/y/z"), ("/3", "c", "ab"),
                                  ("/4", "other", "a/x"), ("/5", "c", "b/a/x")]:
        store.queue_upload(path, account="acct", container=container, blob=blob, base_etag="")
    assert [row.blob for row in store.uploads_under("acct", "c", "a/")] == ["a/x", "a/y/z"]
    assert [row.path for row in store.uploads_under("acct", "c", "")] == ["/1", "/2", "/3",
                                                                           "/5"]
    assert store.uploads_under("other-acct", "c", "") == []


def test_an_inode_number_is_never_given_twice(store: Store) -> None:
    """The kernel may still hold the number of a removed file or folder (an open
    descriptor, a cwd): a new node must never get it, even the newest one's."""
    store.reset_tree()
    data = entry_folder(store)
    first = store.add_folder(data.inode, "a", entry_index=0, blob="a/", listed=None)
    store.remove_node(first)
    second = store.add_folder(data.inode, "b", entry_index=0, blob="b/", listed=None)
    assert second != first
    store.reset_tree()
    assert entry_folder(store).inode not in (first, second)


def test_a_version_4_database_gets_the_block_map_and_keeps_its_cache(db: Path) -> None:
    """4 -> 5 adds cached_blocks and changes nothing else: whole copies stay usable."""
    db.parent.mkdir(parents=True)
    with raw_connection(db) as raw:
        raw.executescript(SCHEMA_V1)
        raw.execute("ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0")
        raw.executescript(SCHEMA_V2_UPLOADS)
        raw.execute("ALTER TABLE uploads ADD COLUMN mtime_ns INTEGER")
        raw.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    raw.close()
    upgraded = Store(db)
    try:
        assert _meta(upgraded)["schema_version"] == str(SCHEMA_VERSION)
        assert "cached_blocks" in _tables(upgraded)
        assert upgraded.cached_file("/c/blobs/aa/1").size == 3
        assert upgraded.upload("/c/blobs/bb/2") is not None
    finally:
        upgraded.close()


def test_blocks_of_a_partial_copy(store: Store) -> None:
    """A partial copy's size is the bytes of its blocks; blocks go with the copy, and
    with any record that replaces it but another partial one (same bytes, new ETag)."""
    store.put_cached_file("/c/blobs/p", blob="big", etag="E1", size=0, state="partial")
    store.add_cached_blocks("/c/blobs/p", [(0, 10, 111), (10, 10, 222), (40, 5, 333)])
    assert store.cached_file("/c/blobs/p").size == 25
    assert store.cached_blocks_in("/c/blobs/p", 0, 10) == {0: 111, 10: 222}
    store.drop_cached_blocks("/c/blobs/p", [10, 30])  # 30: not there, so no bytes
    assert store.cached_file("/c/blobs/p").size == 15
    assert [block.start for block in store.cached_blocks("/c/blobs/")] == [0, 40]
    store.add_cached_blocks("/c/blobs/p", [(40, 5, 444), (50, 7, 555)])  # 40 again
    assert store.cached_file("/c/blobs/p").size == 22
    store.drop_cached_blocks("/c/blobs/p", [50])
    # A new version with the same bytes: its size is what its blocks hold, not what
    # the caller says.
    store.put_cached_file("/c/blobs/p", blob="big", etag="E2", size=0, state="partial")
    assert store.cached_file("/c/blobs/p").size == 15
    assert store.cached_blocks_in("/c/blobs/p", 0, 100) == {0: 111, 40: 444}
    store.put_cached_file("/c/blobs/p", blob="big", etag="E2", size=45)  # a whole copy
    assert store.cached_blocks_in("/c/blobs/p", 0, 100) == {}
    store.put_cached_file("/c/blobs/p", blob="big", etag="E3", size=0, state="partial")
    store.add_cached_blocks("/c/blobs/p", [(0, 10, 1)])
    store.drop_cached_file("/c/blobs/p")
    assert store.cached_blocks("/c/blobs/") == []


def test_a_node_read_again_asks_the_database_nothing(store: Store) -> None:
    data = entry_folder(store, "data", blob="d/")
    list_folder(store, data, [file("a", "d/", size=1)])
    child = store.child(data.inode, "a")
    assert child is not None
    assert store.node(child.inode) == child
    assert vm_steps(store, lambda: store.node(child.inode)) == 0


def test_every_change_of_the_tree_is_seen_by_the_next_read(store: Store) -> None:
    """Nodes are kept as read until the tree changes: a change of a file, and a new
    subfolder (its parent's link count), show at once."""
    data = entry_folder(store, "data", blob="d/")
    list_folder(store, data, [file("a", "d/", size=1)])
    child = store.child(data.inode, "a")
    assert child is not None and store.node(data.inode).subfolders == 0  # type: ignore[union-attr]
    store.set_mtime(child.inode, 123)
    assert store.node(child.inode).mtime_ns == 123  # type: ignore[union-attr]
    store.add_folder(data.inode, "sub", entry_index=0, blob="d/sub/", listed=None)
    assert store.node(data.inode).subfolders == 1  # type: ignore[union-attr]


def test_every_method_that_writes_nodes_forgets_those_read() -> None:
    """The kept nodes are right only if each change of the nodes table goes through a
    method marked to forget them: a new method that writes it must be marked too."""
    import ast
    import inspect
    import re

    source = inspect.getsource(store_module)
    writes = re.compile(r"UPDATE nodes|INTO nodes|DELETE FROM nodes|TABLE[^\n]*nodes")
    unmarked = [
        function.name for function in ast.walk(ast.parse(source))
        if isinstance(function, ast.FunctionDef) and function.name != "_writes_tree"
        and writes.search(ast.get_source_segment(source, function) or "")
        and not any(isinstance(mark, ast.Name) and mark.id == "_writes_tree"
                    for mark in function.decorator_list)]
    assert not unmarked
    for module in (cachetables_module, journal_module, patchtables_module):
        assert not writes.search(inspect.getsource(module)), module.__name__


def test_a_listing_keeps_the_children_a_later_one_saw(store: Store) -> None:
    """A tree listing of a folder above may record a folder's children while that
    folder's own listing, begun earlier, is still under way: its end drops only what
    no later listing saw."""
    data = entry_folder(store, "data", blob="d/")
    older, newer = store.begin_listing(), store.begin_listing()
    store.add_listed(data, newer, [file("b", "d/")], 100.0)
    store.finish_listing(data, newer, 100.0)
    store.add_listed(data, older, [file("a", "d/")], 100.0)
    store.finish_listing(data, older, 100.0)
    assert sorted(children(store, data.inode)) == ["a", "b"]
