"""Folder read-ahead over a real store: which opens queue which files."""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from blobmount.azure import BlobItem
from blobmount.readahead import ReadAhead
from blobmount.store import ROOT_INODE, ListedItem, Node, Store
from blobmount.transfers import Wanted

NAMES = [f"f{i:02d}.py" for i in range(30)]


class Queued:
    """Stands for Downloads: records what read-ahead asks it to fetch."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def read_ahead(self, entry: Any, remote: Any, wanted: Sequence[Wanted]) -> None:
        self.names += [item.shown_path.rpartition("/")[2] for item in wanted]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Store, Node]]:
    store = Store(tmp_path / "meta.sqlite")
    store.reset_tree()
    inode = store.add_folder(ROOT_INODE, "d", entry_index=0, blob="", listed=None)
    node = store.node(inode)
    assert node is not None
    items = [ListedItem(name, BlobItem(f"d/{name}", is_dir=False, size=10, etag=f'"{name}"'))
             for name in NAMES]
    store.add_listed(node, store.begin_listing(), items, now=0.0)
    yield store, node
    store.close()


def opens(store: Store, folder: Node, names: list[str], *, files: int = 4) -> list[str]:
    queued = Queued()
    ahead = ReadAhead(store, queued, files)
    entry = types.SimpleNamespace(cache_max_bytes=None)
    for name in names:
        node = store.child(folder.inode, name)
        assert node is not None
        ahead.after(node, entry, None, "d")
    return queued.names


def test_one_open_queues_nothing(folder: tuple[Store, Node]) -> None:
    assert opens(*folder, ["f05.py"]) == []


def test_opens_that_skip_files_queue_nothing(folder: tuple[Store, Node]) -> None:
    # An import opens the modules it needs, not every file of the folder.
    assert opens(*folder, ["f01.py", "f03.py", "f07.py", "f02.py", "f20.py"]) == []


def test_two_neighbours_in_a_row_start_a_walk_of_one(folder: tuple[Store, Node]) -> None:
    assert opens(*folder, ["f05.py", "f06.py"]) == ["f07.py"]


def test_each_open_of_a_queued_file_doubles_the_window(folder: tuple[Store, Node]) -> None:
    assert opens(*folder, ["f05.py", "f06.py", "f07.py", "f08.py"]) == [
        "f07.py", "f08.py", "f09.py", "f10.py", "f11.py", "f12.py"]


def test_the_window_stops_growing_at_its_files(folder: tuple[Store, Node]) -> None:
    walked = opens(*folder, NAMES[:12], files=4)
    assert walked == NAMES[2:16]  # four ahead of the last open, each queued once


def test_a_walk_that_jumps_past_its_window_starts_again(folder: tuple[Store, Node]) -> None:
    assert opens(*folder, ["f00.py", "f01.py", "f20.py", "f21.py"]) == ["f02.py", "f22.py"]
