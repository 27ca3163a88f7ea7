"""Downloaded copies installed with no fsync: the store's record of them, their sync in
bulk (copysync.py), and what a mount after an unclean stop does with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount import copysync as copysync_module
from blobmount.cachetables import CopyState
from blobmount.copysync import CopySync
from blobmount.journal import Journaled
from blobmount.store import Store
from blobmount.threads import Threads

from .test_eviction import entry
from .test_fs_api import kernel


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "meta" / "blobmount.sqlite")
    yield opened
    opened.close()


def test_a_sync_covers_the_copies_recorded_before_it_began(store: Store) -> None:
    store.put_cached_file("/c/a", blob="a", etag="e1", size=1, synced=False)
    store.put_cached_file("/c/b", blob="b", etag="e1", size=1)  # fsynced: not listed
    mark = store.unsynced_mark()
    # Downloaded again while the sync runs: that version was not in it.
    store.put_cached_file("/c/a", blob="a", etag="e2", size=2, synced=False)
    store.put_cached_file("/c/c", blob="c", etag="e1", size=1, synced=False)
    store.synced_to(mark)
    assert sorted(store.unsynced_copies()) == ["/c/a", "/c/c"]
    store.synced_to(store.unsynced_mark())
    assert store.unsynced_copies() == [] and store.unsynced_mark() == 0


def test_a_linked_name_of_an_unsynced_copy_is_unsynced_too(store: Store) -> None:
    store.put_cached_file("/c/a", blob="a", etag="e", size=1, synced=False)
    store.put_cached_file("/c/b", blob="b", etag="e", size=1)
    store.link_unsynced("/c/a", "/c/moved-a")
    store.link_unsynced("/c/b", "/c/moved-b")
    assert sorted(store.unsynced_copies()) == ["/c/a", "/c/moved-a"]
    store.drop_cached_file("/c/a")
    assert store.unsynced_copies() == ["/c/moved-a"]


class InlineThreads(Threads):
    """Runs the blocking call in the trio thread: the mock clock cannot jump past it."""

    async def run_sync(self, fn, *args):  # type: ignore[override]
        return fn(*args)


def test_the_task_syncs_every_interval_while_copies_wait(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[list[Path]] = []
    monkeypatch.setattr(copysync_module, "_sync_all", lambda folders: synced.append(folders))
    copies = CopySync(store, [entry(tmp_path)], InlineThreads(4), interval=30.0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copies.run)
            await trio.sleep(31)
            assert synced == []  # nothing waited
            store.put_cached_file("/c/a", blob="a", etag="e", size=1, synced=False)
            await trio.sleep(30)
            assert synced == [[tmp_path / "cache"]] and store.unsynced_copies() == []
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_failed_sync_leaves_the_copies_recorded(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def failing(folders: list[Path]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(copysync_module, "_sync_all", failing)
    store.put_cached_file("/c/a", blob="a", etag="e", size=1, synced=False)
    trio.run(CopySync(store, [entry(tmp_path)], InlineThreads(4), 30.0).sync)
    assert store.unsynced_copies() == ["/c/a"]
    assert "cannot sync the cache's file system" in caplog.text


def test_a_sync_lets_journal_rows_drop_the_bytes_of_copies_it_covered(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small file's row holds its bytes until a sync covers its copy; a file journaled
    again while the sync runs keeps its new bytes, since the sync may have missed them."""
    def journal(path: str, data: bytes | None) -> None:
        store.queue_uploads([Journaled(path, "acct", "cont", Path(path).name, "", data=data)])

    journal("/c/a", b"a1")
    journal("/c/b", b"b1")
    journal("/c/large", None)  # fsynced when journaled: holds no bytes

    def sync_all(folders: list[Path]) -> None:
        journal("/c/b", b"b2")  # a close while the sync runs

    monkeypatch.setattr(copysync_module, "_sync_all", sync_all)
    trio.run(CopySync(store, [entry(tmp_path)], InlineThreads(4), 30.0).sync)
    assert store.small_copies() == [("/c/b", b"b2")]
    assert {row.path: row.holds_bytes for row in store.uploads()} == {
        "/c/a": False, "/c/b": True, "/c/large": False}


def test_a_real_sync_empties_the_table(store: Store, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    store.put_cached_file("/c/a", blob="a", etag="e", size=1, synced=False)
    trio.run(CopySync(store, [entry(tmp_path), entry(tmp_path)], Threads(4), 30.0).sync)
    assert store.unsynced_copies() == []


def test_a_mount_after_an_unclean_stop_drops_the_clean_copies_never_synced() -> None:
    """A blob read (its copy downloaded, not fsynced) and a file written (journaled):
    the next mount of that store, as if the daemon had been killed before any sync,
    drops the downloaded copy, which then downloads again, and keeps the written one."""
    with kernel("async") as k:
        state = k.state
        state.remote.put_elsewhere("read.txt", b"from the container")
        inode = k.call(k.fs.lookup, k.root, b"read.txt", None).st_ino
        assert k.read(inode) == b"from the container"
        k.create(b"written.txt", b"written here")
        records = {record.blob: record for record in
                   state.loop.sync(state.store.cached_files, "")}
        assert records["read.txt"].state == CopyState.CLEAN
        assert [Path(path).name for path in state.loop.sync(state.store.unsynced_copies)] == [
            Path(records["read.txt"].path).name]
        state.loop.sync(state.life.recover)  # what the next mount does first
        assert state.loop.sync(state.store.cached_file, records["read.txt"].path) is None
        assert not Path(records["read.txt"].path).exists()
        assert state.loop.sync(state.store.cached_file, records["written.txt"].path) is not None
        assert state.loop.sync(state.store.unsynced_copies) == []
        gets = len(state.remote.calls)
        assert k.read(inode) == b"from the container"
        assert len(state.remote.calls) > gets  # downloaded again
