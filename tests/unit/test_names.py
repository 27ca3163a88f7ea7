"""Blob names to POSIX names: `shown_name` (one segment) and `child_name` (a listing
item under a prefix), by example and by property."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from blobmount.azure import BlobItem, RemoteContainer
from blobmount.listing import NAME_MAX, child_name, shown_name

from .fakeremote import face

# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("segment", [
    "",
    ".",
    "..",
    "\0",
    "a\0b",
    "a/b",
    "/",
    "a/",
    "x" * 256,
    "é" * 128,  # 256 bytes in UTF-8
    "€" * 86,  # 258 bytes
    "😀" * 64,  # 256 bytes
    "x" * 254 + "é",  # 256 bytes, 255 characters
    "\udc80",  # a lone surrogate (os.fsdecode of a non-UTF-8 byte) cannot be shown
    "ok\ud800",
])
def test_segments_that_cannot_be_shown(segment: str) -> None:
    assert shown_name(segment) is None


@pytest.mark.parametrize("segment", [
    "a",
    "...",
    ".hidden",
    "..x",
    " ",
    "new\nline",
    "back\\slash",
    "tab\there",
    "a:b*c?d\"e<f>g|h",
    "x" * 255,
    "é" * 127 + "x",  # 255 bytes
    "€" * 85,  # 255 bytes
    "😀" * 63 + "abc",  # 255 bytes
    "\x7f\x01",
    "\ufeffbom",
])
def test_segments_shown_as_they_are(segment: str) -> None:
    assert shown_name(segment) == segment
    assert len(segment.encode()) <= NAME_MAX


@pytest.mark.parametrize(("prefix", "blob", "shown"), [
    ("", "a", "a"),
    ("", "a/", "a"),  # a folder of the listing
    ("p/", "p/a.txt", "a.txt"),
    ("p/", "p/d/", "d"),
    ("p/q/", "p/q/x y", "x y"),
    ("p/", "p/", None),  # the folder's own marker blob
    ("p/", "p//", None),  # 'p//x': an empty segment
    ("p/", "p//x", None),
    ("", "/a", None),
    ("", "/", None),
    ("", "//", None),
    ("p/", "p/a//", None),
    ("p/", "p/./", None),
    ("p/", "p/../", None),
    ("p/", "p/.", None),
    ("p/", "p/..", None),
    ("p/", "p/a\0", None),
    ("p/", "q/a", None),  # not under the prefix at all
    ("p/", "pa", None),
    ("p/", "p/" + "x" * 255, "x" * 255),
    ("p/", "p/" + "x" * 255 + "/", "x" * 255),
    ("p/", "p/" + "x" * 256, None),
    ("p/", "p/" + "é" * 128 + "/", None),
    ("p/", "p/new\nline", "new\nline"),
    ("p/", "p/back\\slash/", "back\\slash"),
    ("a//", "a//b", "b"),  # a folder reached through an empty segment is just a prefix
])
def test_child_name_examples(prefix: str, blob: str, shown: str | None) -> None:
    assert child_name(prefix, blob) == shown


# --------------------------------------------------------------------------- properties

#: Characters that matter to the rules, mixed into arbitrary text (surrogates included).
_TRICKY = st.sampled_from(["/", ".", "\0", "\n", "\\", "é", "€", "😀", "\udc80", "\ud800", "x"])
_ANY_CHAR = st.one_of(_TRICKY, st.characters(codec=None, exclude_categories=()))
names = st.one_of(
    st.text(_ANY_CHAR, max_size=12),
    st.text(st.sampled_from(["x", "é", "€", "😀"]), min_size=60, max_size=260),  # near 255 B
    st.sampled_from(["", ".", "..", "/", "//", "./", "../", "a/", "a//"]),
)
prefixes = st.one_of(
    st.just(""),
    st.lists(st.text(_ANY_CHAR, max_size=6), min_size=1, max_size=3).map(
        lambda parts: "/".join(parts) + "/"),
)


def _is_posix_name(name: str) -> bool:
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name and (
        size <= NAME_MAX)


@settings(max_examples=300)
@given(segment=names)
@example(segment="x" * 255)
@example(segment="x" * 256)
def test_a_shown_name_is_a_posix_name(segment: str) -> None:
    shown = shown_name(segment)
    if shown is not None:
        assert shown == segment  # shown as it is, never renamed
        assert shown not in ("", ".", "..")
        assert "/" not in shown and "\0" not in shown
        assert len(shown.encode("utf-8")) <= NAME_MAX
    # ...and every name POSIX can show is shown.
    assert (shown is not None) == _is_posix_name(segment)


@settings(max_examples=150)
@given(prefix=prefixes, segment=names)
def test_child_name_inverts_the_prefix(prefix: str, segment: str) -> None:
    assume(shown_name(segment) is not None)
    assert child_name(prefix, prefix + segment) == segment
    assert child_name(prefix, prefix + segment + "/") == segment  # as a folder


@settings(max_examples=150)
@given(prefix=prefixes, blob=names)
def test_a_child_name_is_a_posix_name(prefix: str, blob: str) -> None:
    shown = child_name(prefix, prefix + blob)
    if shown is not None:
        assert _is_posix_name(shown)
        assert prefix + shown in (prefix + blob, prefix + blob[:-1])


@settings(max_examples=100)
@given(prefix=prefixes, other=prefixes, blob=names)
def test_names_outside_the_prefix_are_not_children(prefix: str, other: str, blob: str) -> None:
    name = other + blob
    assume(not name.startswith(prefix))
    assert child_name(prefix, name) is None


@settings(max_examples=150)
@given(
    prefix=prefixes,
    rests=st.lists(
        st.tuples(names, st.sampled_from(["", "/", "//"])).map("".join), max_size=25),
)
def test_no_two_blobs_of_a_listing_share_a_shown_name(prefix: str, rests: list[str]) -> None:
    """The only clash is a blob `a` beside a folder `a/`, which namespace resolves."""
    by_shown: dict[str, set[str]] = defaultdict(set)
    for rest in set(rests):
        shown = child_name(prefix, prefix + rest)
        if shown is not None:
            by_shown[shown].add(prefix + rest)
    for shown, blobs in by_shown.items():
        assert blobs <= {prefix + shown, prefix + shown + "/"}, (shown, blobs)


# --------------------------------------------------------------------------- a listing

class _Pages(RemoteContainer):
    """A remote whose listing of any prefix is the given pages."""

    label = "acct/cont"

    def __init__(self, pages: list[list]) -> None:
        self.pages = pages

    def list_pages(self, prefix: str, page_size: int = 5000) -> Iterator[list[BlobItem]]:
        return iter(self.pages)

    def list_tree(self, prefix: str, most: int) -> tuple[list[BlobItem], bool]:
        return [], False  # pages of one level only: listed a level at a time

    def offline(self) -> bool:
        return False


def _listed(tmp_path, pages: list[list], caplog) -> dict[str, bool]:
    import logging

    import trio

    from blobmount.azure import BlobItem
    from blobmount.namespace import Namespace
    from blobmount.store import ROOT_INODE, Store

    store = Store(tmp_path / "meta.sqlite")
    try:
        store.reset_tree()
        inode = store.add_folder(ROOT_INODE, "data", entry_index=0, blob="", listed=None)
        remote = _Pages([[BlobItem(name, name.endswith("/"), 1, 1, "e") for name in page]
                         for page in pages])
        space = Namespace(store, [], [face(remote)], ttl=60)
        with caplog.at_level(logging.WARNING, logger="blobmount.listing"):
            trio.run(space.listed, store.node(inode))
            store.forget_listing(inode)
            trio.run(space.listed, store.node(inode))  # listed twice: warned once
        return {node.name: node.is_dir for node in store.nodes(store.child_inodes(inode))}
    finally:
        store.close()


@pytest.mark.parametrize("pages", [
    [["a", "a!x", "a/", "b"]],    # Azure: name order, the blob first
    [["a/", "a", "a!x", "b"]],    # Azurite: folders first
    [["a", "a!x"], ["a/", "b"]],  # the folder a page later
    [["a/"], ["a", "a!x", "b"]],  # the blob a page later
])
def test_a_folder_hides_a_blob_of_its_name(tmp_path, caplog, pages) -> None:
    shown = _listed(tmp_path, pages, caplog)
    assert shown == {"a": True, "a!x": False, "b": False}
    warnings = [r.getMessage() for r in caplog.records if "hiding" in r.getMessage()]
    assert len(warnings) == 1 and "'a'" in warnings[0] and "folder of the same name" in warnings[0]


def test_hidden_names_warn_once_each(tmp_path, caplog) -> None:
    shown = _listed(tmp_path, [["", "/", "./", "../", ".", "x" * 256, "ok", "d/"]], caplog)
    assert shown == {"ok": False, "d": True}
    assert len([r for r in caplog.records if "hiding" in r.getMessage()]) == 6


class _Away(_Pages):
    """A remote that lists once, then cannot be reached (and says so, as Remote does)."""

    def offline(self) -> bool:
        return self.calls > 1

    def __init__(self, pages: list[list]) -> None:
        super().__init__(pages)
        self.calls = 0

    def list_pages(self, prefix: str, page_size: int = 5000) -> Iterator[list[BlobItem]]:
        from blobmount.errors import RemoteUnreachable

        self.calls += 1
        if self.calls > 1:
            raise RemoteUnreachable("listing: cannot reach the account (stalled)")
        return iter(self.pages)


def test_a_stale_listing_is_served_while_the_account_is_unreachable(tmp_path, caplog):
    import logging

    import trio

    from blobmount.azure import BlobItem
    from blobmount.errors import RemoteUnreachable
    from blobmount.namespace import Namespace
    from blobmount.store import ROOT_INODE, Store

    store = Store(tmp_path / "meta.sqlite")
    try:
        store.reset_tree()
        inode = store.add_folder(ROOT_INODE, "data", entry_index=0, blob="", listed=None)
        other = store.add_folder(ROOT_INODE, "never", entry_index=0, blob="n/", listed=None)
        remote = _Away([[BlobItem("f", False, 1, 1, "e"), BlobItem("d/", True)]])
        space = Namespace(store, [], [face(remote)], ttl=0)
        trio.run(space.listed, store.node(inode))
        with caplog.at_level(logging.WARNING, logger="blobmount.namespace"):
            trio.run(space.listed, store.node(inode))  # past the TTL, the account away
        assert remote.calls == 2
        assert sorted(n.name for n in store.nodes(store.child_inodes(inode))) == ["d", "f"]
        assert any("serving the listing of data" in r.getMessage() for r in caplog.records)
        trio.run(space.listed, store.node(inode))  # found away just now: not asked again
        assert remote.calls == 2
        with pytest.raises(RemoteUnreachable):  # never listed: nothing to serve
            trio.run(space.listed, store.node(other))
    finally:
        store.close()
