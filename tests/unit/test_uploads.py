"""Uploads over the in-memory remote: the journal, its retries, conflicts, forgetting,
and the worker pool's bound (no more attempts at once than workers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount.azure import BlobItem
from blobmount.cache import Cache
from blobmount.config import Account, MountEntry, Settings
from blobmount.errors import BlobmountError, RemoteUnreachable
from blobmount.store import Store
from blobmount.threads import Threads
from blobmount.uploads import Target, Uploads

from .fakeremote import FakeRemote, face

#: Seconds the counting remote's gate waits: only a test that hangs reaches it.
TIMEOUT = 30.0
WORKERS = 3


class CountingRemote(FakeRemote):
    """Counts the uploads under way (`most`: the most at once); each waits at the gate
    until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0
        self.gate = threading.Event()
        self._count = threading.Lock()

    def upload(self, blob: str, source: Path, **kwargs) -> BlobItem:
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if not self.gate.wait(TIMEOUT):
                raise AssertionError("the test never opened the gate")
            return super().upload(blob, source, **kwargs)
        finally:
            with self._count:
                self.running -= 1


class FailingRemote(FakeRemote):
    """Its first `failures` uploads find the account unreachable."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def upload(self, blob: str, source: Path, **kwargs) -> BlobItem:
        if self.failures:
            self.failures -= 1
            raise RemoteUnreachable(f"upload of {self.label}/{blob}: no answer")
        return super().upload(blob, source, **kwargs)


@pytest.fixture
def entry(tmp_path: Path) -> MountEntry:
    account = Account(name="acct", account_name="acct",
                      endpoint="https://acct.blob.core.windows.net", account_key="a2V5")
    return MountEntry(local="data", account=account, container="cont", prefix="",
                      cache_dir=tmp_path / "cache", upload="async")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "meta" / "blobmount.sqlite")
    yield store
    store.close()


class Harness:
    """Uploads wired to one remote, with what its callbacks reported."""

    def __init__(self, store: Store, entry: MountEntry, remote: FakeRemote, *,
                 settings: Settings | None = None) -> None:
        self.cache = Cache(store)
        self.entry = entry
        self.remote = remote
        self.uploaded: list[str] = []
        self.conflicts: list[str] = []
        self.all_uploaded = trio.Event()
        self.expected = 0
        threads = Threads(64)
        self.uploads = Uploads(
            store, self.cache, [entry], [face(remote, threads)], None,
            settings=settings or Settings(upload_batch_window=0.0),
            threads=threads, on_uploaded=self._on_uploaded,
            on_conflict=lambda target, blob: self.conflicts.append(blob))

    def _on_uploaded(self, target: Target, blob: str, *done) -> None:
        self.uploaded.append(blob)
        if self.expected and len(self.uploaded) >= self.expected:
            self.all_uploaded.set()

    def write(self, blob: str, data: bytes) -> Path:
        path = self.cache.path_for(self.entry, blob)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    async def journal(self, blob: str, data: bytes, base_etag: str = "") -> tuple[Path, int]:
        path = self.write(blob, data)
        version = await self.uploads.journal(path, self.entry, blob, base_etag,
                                             mtime_ns=1_000_000_000)
        return path, version


def test_workers_bound_the_attempts_under_way(store: Store, entry: MountEntry) -> None:
    """N workers, 3N due rows: N uploads start and wait (all the workers), no more
    start while they do, and then all 3N go up, each once."""
    remote = CountingRemote()
    harness = Harness(store, entry, remote, settings=Settings(
        upload_batch_window=0.0, max_parallel_transfers=WORKERS))
    harness.expected = 3 * WORKERS

    async def main() -> None:
        await _journal_three_per_worker(harness)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harness.uploads.run)
            with trio.fail_after(TIMEOUT):
                assert await _under_way_once_all_wait(remote) == WORKERS
                await harness.all_uploaded.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert remote.most == WORKERS
    assert sorted(harness.uploaded) == sorted(f"f{number}" for number in range(3 * WORKERS))
    assert len([call for call in remote.calls if call[0] == "upload"]) == 3 * WORKERS
    assert store.uploads() == []


def test_sync_tries_as_many_at_once_as_there_are_workers(store: Store,
                                                          entry: MountEntry) -> None:
    remote = CountingRemote()
    harness = Harness(store, entry, remote, settings=Settings(
        upload_batch_window=0.0, max_parallel_transfers=WORKERS))

    async def main() -> None:
        await _journal_three_per_worker(harness)
        async with trio.open_nursery() as nursery:
            left: list[object] = []
            nursery.start_soon(lambda: _collect(harness.uploads.sync(), left))
            with trio.fail_after(TIMEOUT):
                assert await _under_way_once_all_wait(remote) == WORKERS
        assert left == [[]]

    trio.run(main)
    assert remote.most == WORKERS
    assert len(harness.uploaded) == 3 * WORKERS


async def _collect(call, into: list[object]) -> None:
    into.append(await call)


def test_journal_holds_the_upload_until_it_is_done(store: Store, entry: MountEntry,
                                                     tmp_path: Path) -> None:
    remote = FakeRemote()
    harness = Harness(store, entry, remote)

    async def main() -> None:
        path, version = await harness.journal("d/a.txt", b"written")
        # Committed (the store holds its database alone: no other connection can look).
        assert not store._db.in_transaction
        row = store.upload(str(path))
        assert row is not None and row.blob == "d/a.txt" and row.version == version
        assert "d/a.txt" not in remote.files()
        await harness.uploads.upload_now(path, version)

    trio.run(main)
    assert remote.files()["d/a.txt"].data == b"written"
    assert remote.files()["d/a.txt"].mtime_ns == 1_000_000_000
    assert store.uploads() == []
    assert harness.uploaded == ["d/a.txt"]


def test_a_failed_upload_stays_and_is_retried(store: Store, entry: MountEntry) -> None:
    remote = FailingRemote(failures=1)
    harness = Harness(store, entry, remote)

    async def main() -> None:
        path, version = await harness.journal("a", b"kept")
        with pytest.raises(BlobmountError, match="no answer"):
            await harness.uploads.upload_now(path, version)
        row = store.upload(str(path))
        assert row is not None and row.attempts == 1 and "no answer" in row.last_error
        assert row.next_try > time.time()  # backed off
        assert "a" not in remote.files()
        assert await harness.uploads.sync() == []

    trio.run(main)
    assert remote.files()["a"].data == b"kept"
    assert harness.uploaded == ["a"]


def test_a_blob_changed_meanwhile_keeps_both(store: Store, entry: MountEntry) -> None:
    remote = FakeRemote()
    base = remote.put_elsewhere("a.txt", b"theirs, first")
    harness = Harness(store, entry, remote)

    async def main() -> None:
        path, version = await harness.journal("a.txt", b"ours", base_etag=base.etag)
        remote.put_elsewhere("a.txt", b"theirs, again")
        await harness.uploads.upload_now(path, version)

    trio.run(main)
    files = remote.files()
    assert files["a.txt"].data == b"theirs, again"
    kept = [name for name in files if name.startswith("a.conflict-")]
    assert len(kept) == 1 and kept[0].endswith(".txt") and files[kept[0]].data == b"ours"
    assert harness.conflicts == ["a.txt"]
    assert store.uploads() == []


def test_a_forgotten_upload_never_goes_up(store: Store, entry: MountEntry) -> None:
    remote = FakeRemote()
    harness = Harness(store, entry, remote)

    async def main() -> None:
        path, _ = await harness.journal("gone", b"deleted before its upload")
        await harness.uploads.forget(path)
        assert await harness.uploads.sync() == []

    trio.run(main)
    assert store.uploads() == []
    assert "gone" not in remote.files()
    assert not [call for call in remote.calls if call[0] == "upload"]


async def _journal_three_per_worker(harness: Harness) -> None:
    for number in range(3 * WORKERS):
        await harness.journal(f"f{number}", f"bytes {number}".encode())


async def _under_way_once_all_wait(remote: CountingRemote) -> int:
    """How many uploads run once every task waits (the workers on their uploads, the
    scheduler on a free worker: an unbounded pool would have started them all); then
    the uploads may finish."""
    while remote.running < WORKERS:
        await trio.sleep(0.01)
    await trio.testing.wait_all_tasks_blocked()
    under_way = remote.running
    remote.gate.set()
    return under_way
