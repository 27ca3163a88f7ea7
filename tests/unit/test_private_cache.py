"""A cache folder is made private, with what blobmount keeps in it, and nothing else."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from blobmount.cache import ENTRY_ITEMS, SharedFolder, make_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_loose_folder_and_what_blobmount_keeps_in_it_are_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    (folder / "blobs" / "ab").mkdir(parents=True)
    copy = folder / "blobs" / "ab" / "copy"
    copy.write_bytes(b"x")
    neighbour = folder / "notes.txt"  # the user's, not blobmount's
    neighbour.write_bytes(b"mine")
    for path in (folder, folder / "blobs", folder / "blobs" / "ab"):
        path.chmod(0o755)
    copy.chmod(0o644)
    neighbour.chmod(0o644)
    assert make_private(folder, ENTRY_ITEMS) == 4
    assert [mode(p) for p in (folder, folder / "blobs", folder / "blobs" / "ab", copy)] == [
        0o700, 0o700, 0o700, 0o600]
    assert mode(neighbour) == 0o644
    assert make_private(folder, ENTRY_ITEMS) == 0  # private already: nothing to say


def test_a_missing_folder_is_made_private(tmp_path: Path) -> None:
    assert make_private(tmp_path / "a" / "b", ENTRY_ITEMS) == 0
    assert mode(tmp_path / "a" / "b") == 0o700


def test_a_shared_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(SharedFolder, match="1777"):
        make_private(shared, ENTRY_ITEMS)
    assert mode(shared) == 0o1777
