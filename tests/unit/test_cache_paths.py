"""Cache files: where a blob's copy lives (never outside the cache folder, never shared
by two blobs) and when a recorded copy may be used."""

from __future__ import annotations

import os
import re
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from blobmount import cachetables as cachetables_module
from blobmount.cache import BLOBS_FOLDER, Cache
from blobmount.config import Account, MountEntry
from blobmount.store import Store

HEX64 = re.compile(r"[0-9a-f]{64}")


def account(account_name: str = "acct") -> Account:
    return Account(name=account_name, account_name=account_name,
                   endpoint=f"https://{account_name}.blob.core.windows.net",
                   account_key="a2V5")


def mount_entry(cache_dir: Path, *, account_name: str = "acct", container: str = "cont",
                prefix: str = "", local: str = "data") -> MountEntry:
    return MountEntry(local=local, account=account(account_name), container=container,
                      prefix=prefix, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    store = Store(tmp_path_factory.mktemp("meta") / "blobmount.sqlite")
    yield Cache(store)
    store.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    store = Store(tmp_path / "meta" / "blobmount.sqlite")
    yield Cache(store)
    store.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_700_000_000.0]
    monkeypatch.setattr(cachetables_module, "time",  # the store's table of copies
                        types.SimpleNamespace(time=lambda: now[0], time_ns=time.time_ns))
    return now


CACHE_DIR = Path("/var/cache/blobmount-test")

blob_names = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    st.lists(st.sampled_from(["..", ".", "", "/", "etc", "passwd", "\0", "\udc80", "😀"]),
             max_size=8).map("/".join),
    st.text(st.sampled_from("ab/.\0é"), min_size=200, max_size=400),
)


# --------------------------------------------------------------------------- path_for


@settings(max_examples=150)
@given(blob=blob_names)
@example(blob="../../../../etc/passwd")
@example(blob="/etc/passwd")
@example(blob="/")
@example(blob="..")
@example(blob="")
@example(blob="a\0b")
@example(blob="\udc80\udcff")  # os.fsdecode of bytes that are not UTF-8
@example(blob="C:\\Windows\\..\\x")
@example(blob="x" * 5000)
def test_a_cache_path_stays_in_the_cache_folder(module_cache: Cache, blob: str) -> None:
    entry = mount_entry(CACHE_DIR)
    path = module_cache.path_for(entry, blob)
    blobs = CACHE_DIR / BLOBS_FOLDER
    assert path.parent.parent == blobs
    assert HEX64.fullmatch(path.name)
    assert path.parent.name == path.name[:2]
    # Nothing in it that the kernel or os.path would interpret.
    assert os.path.normpath(path) == str(path)
    assert os.path.commonpath([os.path.abspath(path), blobs]) == str(blobs)
    assert "\0" not in str(path)
    assert module_cache.path_for(entry, blob) == path  # the same every time


def test_a_cache_path_depends_on_the_blob_only_not_on_the_mount_entry(
        module_cache: Cache) -> None:
    one = mount_entry(CACHE_DIR, local="a", prefix="")
    two = mount_entry(CACHE_DIR, local="b/c", prefix="sub/")
    assert module_cache.path_for(one, "sub/x") == module_cache.path_for(two, "sub/x")
    elsewhere = mount_entry(CACHE_DIR / "other")
    assert module_cache.path_for(elsewhere, "sub/x").parent.parent == (
        CACHE_DIR / "other" / BLOBS_FOLDER)


# Valid Azure names (no '/' in either), from a small alphabet so that clashes are tried.
account_names = st.text("ac1", min_size=3, max_size=6)
containers = st.builds("{}{}{}".format, st.text("ac1", min_size=1, max_size=3),
                       st.sampled_from(["", "-"]), st.text("ac1", min_size=2, max_size=3))
identities = st.tuples(account_names, containers, blob_names)


@settings(max_examples=100)
@given(first=identities, second=identities)
@example(first=("acct", "cont", "x/y"), second=("acct", "cont", "x//y"))
@example(first=("acct", "cont", "a\udc80"), second=("acct", "cont", "a\ufffd"))
@example(first=("acct", "cont", "\ud83d\ude00"), second=("acct", "cont", "😀"))
@example(first=("acct", "cont1", "x"), second=("acct", "cont", "1x"))
@example(first=("acc1", "cont", "x"), second=("acc", "1cont", "x"))
@example(first=("acct", "cont", "X"), second=("acct", "cont", "x"))
def test_different_blobs_get_different_paths(
        module_cache: Cache, first: tuple[str, str, str], second: tuple[str, str, str]) -> None:
    paths = [module_cache.path_for(mount_entry(CACHE_DIR, account_name=a, container=c), b)
             for a, c, b in (first, second)]
    assert (paths[0] == paths[1]) == (first == second)


# --------------------------------------------------------------------------- usable


def _copy(cache: Cache, entry: MountEntry, blob: str, data: bytes, etag: str) -> Path:
    path = cache.path_for(entry, blob)
    temp = cache.temp_path(path)
    temp.write_bytes(data)
    size = cache.install(temp, path)
    assert size == len(data)
    cache.record(path, blob=blob, etag=etag, size=size)
    return path


def test_a_missing_record_is_not_usable(cache: Cache, tmp_path: Path) -> None:
    path = cache.path_for(mount_entry(tmp_path / "c"), "a")
    assert not cache.usable(path, "E1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stray")  # a file nobody recorded is not trusted either
    assert not cache.usable(path, "E1")


def test_a_recorded_copy_is_usable_and_touched(cache: Cache, tmp_path: Path,
                                               clock: list[float]) -> None:
    path = _copy(cache, mount_entry(tmp_path / "c"), "dir/a.bin", b"hello", "E1")
    assert path.read_bytes() == b"hello"
    clock[0] += 3600
    assert cache.usable(path, "E1")
    record = cache.store.cached_file(str(path))
    assert record is not None and record.last_access == clock[0]
    assert (record.blob, record.etag, record.size, record.state) == (
        "dir/a.bin", "E1", 5, "clean")


def test_another_etag_is_not_usable(cache: Cache, tmp_path: Path) -> None:
    path = _copy(cache, mount_entry(tmp_path / "c"), "a", b"hello", "E1")
    assert not cache.usable(path, "E2")
    assert not cache.usable(path, None)
    assert not cache.usable(path, '"E1"')
    # The copy is merely stale: its record stays until a download replaces it.
    assert cache.store.cached_file(str(path)) is not None
    assert cache.usable(path, "E1")


def test_a_copy_deleted_by_hand_is_not_usable_and_forgotten(cache: Cache, tmp_path: Path) -> None:
    path = _copy(cache, mount_entry(tmp_path / "c"), "a", b"hello", "E1")
    path.unlink()
    assert not cache.usable(path, "E1")
    assert cache.store.cached_file(str(path)) is None


@pytest.mark.parametrize("data", [b"", b"hell", b"hello!"])
def test_a_copy_of_the_wrong_size_is_not_usable_and_forgotten(
        cache: Cache, tmp_path: Path, data: bytes) -> None:
    path = _copy(cache, mount_entry(tmp_path / "c"), "a", b"hello", "E1")
    path.write_bytes(data)
    assert not cache.usable(path, "E1")
    assert cache.store.cached_file(str(path)) is None
    assert not cache.usable(path, "E1")


def test_an_empty_blob_is_usable(cache: Cache, tmp_path: Path) -> None:
    path = _copy(cache, mount_entry(tmp_path / "c"), "empty", b"", "E0")
    assert cache.usable(path, "E0")


# --------------------------------------------------------------------------- temp files


def test_temp_path_is_beside_the_final_path(cache: Cache, tmp_path: Path) -> None:
    path = cache.path_for(mount_entry(tmp_path / "c"), "a/b/../c")
    assert not path.parent.exists()
    temp = cache.temp_path(path)
    assert path.parent.is_dir()  # made, so the download can start writing
    assert temp.parent == path.parent
    assert temp.name.startswith(path.name + ".") and temp.name.endswith(".tmp")
    assert temp != path and not temp.exists()
    assert cache.temp_path(path) != temp  # each writer its own
    temp.write_bytes(b"x")
    assert cache.install(temp, path) == 1
    assert not temp.exists() and path.read_bytes() == b"x"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_every_folder_a_copy_can_go_in_is_made_at_the_start(tmp_path: Path) -> None:
    """No download into a fresh cache waits on an mkdir: the 256 folders are there."""
    entry = mount_entry(tmp_path / "c")
    (tmp_path / "c" / BLOBS_FOLDER / "7f").mkdir(parents=True)  # an earlier mount's
    Cache.make_folders([entry, mount_entry(tmp_path / "c", container="other")])
    folders = sorted(os.listdir(tmp_path / "c" / BLOBS_FOLDER))
    assert folders == [f"{byte:02x}" for byte in range(256)]
    cache = Cache(types.SimpleNamespace())  # type: ignore[arg-type]
    for blob in ("a", "b/c", "é"):
        assert cache.path_for(entry, blob).parent.is_dir()


def test_a_temporary_name_makes_its_folder_if_it_is_missing(tmp_path: Path) -> None:
    copy = tmp_path / "c" / BLOBS_FOLDER / "ab" / ("ab" + "0" * 62)
    temp = Cache.temp_path(copy)
    assert temp.parent == copy.parent and copy.parent.is_dir()
    assert temp.name.startswith(copy.name) and temp.name.endswith(".tmp")
