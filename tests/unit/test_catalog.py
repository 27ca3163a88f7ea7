"""Paths under the mount point, as control requests name them, mapped to entries and
blob names; and which listed blobs the mount shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from blobmount.azure import BlobItem
from blobmount.catalog import OutsideTheMount, inside, normalized, places, shown_files
from blobmount.config import Account, MountEntry

ACCOUNT = Account(name="a", account_name="acct", endpoint="https://acct.blob.core.windows.net")


def mount(local: str, prefix: str = "") -> MountEntry:
    return MountEntry(local=local, account=ACCOUNT, container="c", prefix=prefix,
                      cache_dir=Path("/cache") / local.replace("/", "__"))


ENTRIES = [mount("data", "datasets/"), mount("team/models"), mount("team/scratch", "u/")]


@pytest.mark.parametrize(("path", "clean"), [
    ("", ""), ("/", ""), ("./data//x/", "data/x"), ("data/x/../y", "data/y"), ("a/./b", "a/b"),
])
def test_normalized(path: str, clean: str) -> None:
    assert normalized(path) == clean


@pytest.mark.parametrize("path", ["..", "../etc", "data/../../x", "a\0b"])
def test_paths_leaving_the_mount_are_refused(path: str) -> None:
    with pytest.raises(OutsideTheMount):
        normalized(path)


def test_places_inside_an_entry() -> None:
    [place] = places(ENTRIES, "data/train/x.csv")
    assert (place.index, place.blob, place.shown, place.whole_entry) == (
        0, "datasets/train/x.csv", "data/train/x.csv", False)
    [place] = places(ENTRIES, "team/scratch")
    assert (place.index, place.blob, place.whole_entry) == (2, "u/", True)


def test_places_above_entries_cover_each_whole() -> None:
    assert [(p.index, p.blob) for p in places(ENTRIES, "")] == [(0, "datasets/"), (1, ""),
                                                                (2, "u/")]
    assert [p.shown for p in places(ENTRIES, "team")] == ["team/models", "team/scratch"]
    assert places(ENTRIES, "elsewhere") == []
    assert places(ENTRIES, "dat") == []  # a prefix of a name is not the folder


def test_inside() -> None:
    [file_place] = places(ENTRIES, "data/a")
    assert inside(file_place, "datasets/a") and inside(file_place, "datasets/a/b")
    assert not inside(file_place, "datasets/ab")
    [whole] = places(ENTRIES, "data")
    assert inside(whole, "datasets/anything") and not inside(whole, "other/x")


def test_shown_files_leave_out_what_the_mount_hides() -> None:
    items = [
        BlobItem("datasets/a", False, 1),           # hidden: the folder a/ wins
        BlobItem("datasets/a/b.txt", False, 2),
        BlobItem("datasets/empty/", True),          # a folder marker
        BlobItem("datasets/x//y", False, 3),        # an empty segment
        BlobItem("datasets/dot/./z", False, 4),
        BlobItem("datasets/" + "n" * 256, False, 5),
        BlobItem("datasets/marked", False, 6),      # a file beside a marker of its name
        BlobItem("datasets/marked/", True),
        BlobItem("datasets/ok.txt", False, 7),
    ]
    shown = [(path, item.size) for path, item in shown_files(ENTRIES[0], items)]
    assert shown == [("data/a/b.txt", 2), ("data/ok.txt", 7)]
