"""A folder listed with everything under it by one request (listing.py's tree listing):
every folder in the tree shows what its own listing would, and one too large for a
request is listed a level at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from blobmount import listing as listing_module
from blobmount.azure.listing import FOLDER_MARKER_KEY
from blobmount.namespace import Namespace
from blobmount.store import ROOT_INODE, Node, Store

from .fakeremote import FakeRemote, face


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "meta.sqlite")
    yield opened
    opened.close()


def namespace(store: Store, remote: FakeRemote) -> tuple[Namespace, Node]:
    store.reset_tree()
    inode = store.add_folder(ROOT_INODE, "data", entry_index=0, blob="", listed=None)
    node = store.node(inode)
    assert node is not None
    return Namespace(store, [], [face(remote)], ttl=60), node


def shown(store: Store, folder: Node, space: Namespace) -> dict[str, object]:
    """The tree under `folder` as the mount shows it (each folder listed if need be):
    name -> (size, mode) of a file, or the folder's own tree."""
    folder = trio.run(space.listed, folder)
    tree: dict[str, object] = {}
    for node in store.nodes(store.child_inodes(folder.inode)):
        tree[node.name] = shown(store, node, space) if node.is_dir else (node.size, node.mode)
    return tree


def put(remote: FakeRemote, *names: str) -> None:
    for name in names:
        if name.endswith("/"):  # a folder's marker blob, as blobfuse2 and blobmount make
            remote._store(name[:-1], b"", {FOLDER_MARKER_KEY: "true", "mode": "0750"})
        else:
            remote._store(name, name.encode(), {})


def listings(remote: FakeRemote) -> list[tuple[str, str]]:
    return [call for call in remote.calls if call[0].startswith("list")]


def test_a_folder_and_every_folder_in_it_come_by_one_request(store: Store) -> None:
    remote = FakeRemote()
    put(remote, "pkg/__init__.py", "pkg/sub/", "pkg/sub/a.py", "pkg/sub/deep/b.py",
        "pkg/empty/", "top.txt")
    space, data = namespace(store, remote)
    assert shown(store, data, space) == {
        "pkg": {"__init__.py": (15, None), "empty": {},
                "sub": {"a.py": (12, None), "deep": {"b.py": (17, None)}}},
        "top.txt": (7, None)}
    # The entry's top a level at a time (a container's top is where it is largest),
    # then `pkg` and every folder in it by one request.
    assert listings(remote) == [("list_pages", ""), ("list_tree", "pkg/")]
    sub = store.child(store.child(data.inode, "pkg").inode, "sub")  # type: ignore[union-attr]
    assert sub is not None and sub.mode is not None and sub.mode & 0o777 == 0o750  # its marker's


def test_a_tree_too_large_for_one_request_is_listed_a_level_at_a_time(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing_module, "TREE_LISTING_MAX", 3)
    remote = FakeRemote()
    put(remote, "t/a/1", "t/a/2", "t/b/1", "t/c")
    space, data = namespace(store, remote)
    assert shown(store, data, space) == {"t": {"a": {"1": (5, None), "2": (5, None)},
                                               "b": {"1": (5, None)}, "c": (3, None)}}
    # `t` held 4 blobs: one tree request, then its level; each folder in it held few
    # enough for its own tree request.
    assert listings(remote) == [("list_pages", ""), ("list_tree", "t/"), ("list_pages", "t/"),
                                ("list_tree", "t/a/"), ("list_tree", "t/b/")]
    t = store.child(data.inode, "t")
    assert t is not None
    store.forget_listing(t.inode)
    trio.run(space.listed, store.node(t.inode))
    assert remote.calls[-1] == ("list_pages", "t/")  # known large: no tree request again


SEGMENTS = st.sampled_from(["a", "b", "a!x", ".", "..", "", "é", "x" * 256])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(SEGMENTS, min_size=1, max_size=4), st.booleans()),
                max_size=12))
def test_every_folder_of_a_tree_shows_what_its_own_listing_would(tmp_path_factory, names):
    """Hidden names, a blob beside a folder of its name, markers, empty segments: the
    tree listing and the listings a level at a time give the same tree."""
    blobs = sorted({"/".join(segments) + ("/" if marker else "") for segments, marker in names}
                   - {"/", ""})
    trees = []
    for most in (listing_module.TREE_LISTING_MAX, 0):
        folder = tmp_path_factory.mktemp("tree")
        store = Store(folder / "meta.sqlite")
        try:
            remote = FakeRemote()
            put(remote, *blobs)
            original = listing_module.TREE_LISTING_MAX
            listing_module.TREE_LISTING_MAX = most
            try:
                space, data = namespace(store, remote)
                trees.append(shown(store, data, space))
            finally:
                listing_module.TREE_LISTING_MAX = original
        finally:
            store.close()
    assert trees[0] == trees[1]
