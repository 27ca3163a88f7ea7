"""Downloads: one download per blob however many readers wait, written under a
temporary name and never left half-done, with a stand-in for Remote (SDK path only)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount.azure import BlobItem, RemoteContainer, range_size
from blobmount.cache import Cache
from blobmount.config import Account, MountEntry
from blobmount.errors import RemoteError, RemoteUnreachable
from blobmount.store import Store
from blobmount.transfers import Downloads, Filling

from .fakeremote import face

READERS = 8
TIMEOUT = 10
ACCOUNT = Account(name="acct", account_name="acct",
                  endpoint="https://acct.blob.core.windows.net", account_key="a2V5")


class FakeRemote(RemoteContainer):
    """Remote's download: writes the blob's bytes, optionally held until released."""

    account = ACCOUNT
    container = "cont"
    label = "acct/cont"

    def __init__(self, blobs: dict[str, tuple[bytes, str]]) -> None:
        self.blobs = blobs  # name -> (bytes, etag)
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_with: Exception | None = None
        self.away = False  # what Remote.offline() answers
        self._lock = threading.Lock()

    def offline(self) -> bool:
        return self.away

    def download(self, blob: str, destination: Path, *, size: int | None = None,
                 concurrency: int = 4, on_progress: Callable[[int], None] | None = None,
                 ) -> BlobItem:
        with self._lock:
            self.calls.append(blob)
        data, etag = self.blobs[blob]
        with open(destination, "wb") as out:
            out.write(data[: len(data) // 2])  # a half-written file until the end
            if not self.gate.wait(TIMEOUT):
                raise AssertionError("the test never released the download")
            if self.fail_with is not None:
                raise self.fail_with
            out.write(data[len(data) // 2:])
        if on_progress is not None:
            on_progress(len(data))
        return BlobItem(blob, False, len(data), 1_000, etag)

    def blob_url(self, blob: str = "") -> str:  # pragma: no cover - AzCopy path only
        raise AssertionError("AzCopy is off in these tests")


@pytest.fixture
def entry(tmp_path: Path) -> MountEntry:
    return MountEntry(local="data", account=ACCOUNT, container="cont", prefix="",
                      cache_dir=tmp_path / "cache")


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    store = Store(tmp_path / "meta" / "blobmount.sqlite")
    yield Cache(store)
    store.close()


def downloads_for(cache: Cache, *, sdk_max: int = 1 << 30) -> Downloads:
    return Downloads(cache, None, sdk_max=sdk_max)


def temp_files(entry: MountEntry) -> list[Path]:
    return sorted(entry.cache_dir.rglob("*.tmp"))


DATA = bytes(range(256)) * 41


async def _readers(downloads: Downloads, entry: MountEntry, remote: FakeRemote, blob: str,
                   etag: str, outcomes: list, readers: int = READERS) -> None:
    """`readers` concurrent opens of one blob; the download is let go once all wait."""
    size = len(remote.blobs[blob][0])

    async def reader() -> None:
        try:
            outcomes.append(await downloads.cached_copy(
                entry, face(remote), blob, size=size, etag=etag, shown_path=f"data/{blob}"))
        except Exception as exc:
            outcomes.append(exc)

    remote.gate.clear()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(readers):
                nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            remote.gate.set()


def test_concurrent_readers_share_one_download(cache: Cache, entry: MountEntry) -> None:
    remote = FakeRemote({"dir/big.bin": (DATA, "E1")})
    downloads = downloads_for(cache)
    outcomes: list = []
    trio.run(_readers, downloads, entry, remote, "dir/big.bin", "E1", outcomes)

    path = cache.path_for(entry, "dir/big.bin")
    assert remote.calls == ["dir/big.bin"]
    assert downloads.started == {"data/dir/big.bin": 1}
    assert outcomes == [(path, True)] * READERS
    assert path.read_bytes() == DATA
    assert temp_files(entry) == []
    record = cache.store.cached_file(str(path))
    assert record is not None and (record.blob, record.etag, record.size, record.state) == (
        "dir/big.bin", "E1", len(DATA), "clean")


def test_a_second_open_downloads_nothing(cache: Cache, entry: MountEntry) -> None:
    remote = FakeRemote({"a": (b"alpha", "E1")})
    downloads = downloads_for(cache)

    async def main() -> list:
        return [await downloads.cached_copy(entry, face(remote), "a", size=5, etag="E1",
                                            shown_path="data/a") for _ in range(3)]

    path = cache.path_for(entry, "a")
    assert trio.run(main) == [(path, True), (path, False), (path, False)]
    assert remote.calls == ["a"]
    assert downloads.started == {"data/a": 1}


def test_an_account_found_away_serves_the_cache_and_fails_the_rest_at_once(
        cache: Cache, entry: MountEntry) -> None:
    remote = FakeRemote({"kept": (b"kept", "E1"), "cold": (b"cold", "E2")})
    downloads = downloads_for(cache)

    async def main() -> None:
        await downloads.cached_copy(entry, face(remote), "kept", size=4, etag="E1",
                                    shown_path="data/kept")
        remote.away = True
        path, downloaded = await downloads.cached_copy(entry, face(remote), "kept", size=4,
                                                       etag="E1", shown_path="data/kept")
        assert (path.read_bytes(), downloaded) == (b"kept", False)
        with pytest.raises(RemoteUnreachable):
            await downloads.cached_copy(entry, face(remote), "cold", size=4, etag="E2",
                                        shown_path="data/cold")

    trio.run(main)
    assert remote.calls == ["kept"]  # no try at all while the account is away
    assert temp_files(entry) == []


def test_a_failed_download_reaches_every_reader_and_leaves_nothing(
        cache: Cache, entry: MountEntry) -> None:
    remote = FakeRemote({"a": (DATA, "E1")})
    remote.fail_with = RemoteError("download of acct/cont/a: connection reset")
    downloads = downloads_for(cache)
    outcomes: list = []
    trio.run(_readers, downloads, entry, remote, "a", "E1", outcomes)

    path = cache.path_for(entry, "a")
    assert remote.calls == ["a"]
    assert downloads.started == {"data/a": 1}
    assert len(outcomes) == READERS
    assert all(isinstance(o, RemoteError) and "connection reset" in str(o) for o in outcomes)
    assert temp_files(entry) == []
    assert not path.exists()
    assert cache.store.cached_file(str(path)) is None

    # The next open tries again, and succeeds.
    remote.fail_with = None
    outcomes.clear()
    trio.run(_readers, downloads, entry, remote, "a", "E1", outcomes)
    assert outcomes == [(path, True)] * READERS
    assert remote.calls == ["a", "a"]
    assert path.read_bytes() == DATA and temp_files(entry) == []


def test_a_changed_blob_is_downloaded_again(cache: Cache, entry: MountEntry) -> None:
    remote = FakeRemote({"a": (b"version one", "E1")})
    downloads = downloads_for(cache)

    async def open_a(etag: str) -> tuple[Path, bool]:
        return await downloads.cached_copy(entry, face(remote), "a", size=11, etag=etag,
                                           shown_path="data/a")

    path, downloaded = trio.run(open_a, "E1")
    assert downloaded and path.read_bytes() == b"version one"
    remote.blobs["a"] = (b"version two!", "E2")
    assert trio.run(open_a, "E2") == (path, True)
    assert path.read_bytes() == b"version two!"
    assert trio.run(open_a, "E2") == (path, False)
    assert remote.calls == ["a", "a"] and downloads.started == {"data/a": 2}
    assert temp_files(entry) == []


def test_a_copy_deleted_by_hand_is_downloaded_again(cache: Cache, entry: MountEntry) -> None:
    remote = FakeRemote({"a": (b"alpha", "E1")})
    downloads = downloads_for(cache)

    async def open_a() -> tuple[Path, bool]:
        return await downloads.cached_copy(entry, face(remote), "a", size=5, etag="E1",
                                           shown_path="data/a")

    path, _ = trio.run(open_a)
    path.unlink()
    assert trio.run(open_a) == (path, True)
    assert path.read_bytes() == b"alpha" and remote.calls == ["a", "a"]


def test_different_blobs_download_side_by_side(cache: Cache, entry: MountEntry) -> None:
    blobs = {f"f{i}": (bytes([i]) * (100 + i), f"E{i}") for i in range(6)}
    remote = FakeRemote(blobs)
    downloads = downloads_for(cache)
    got: dict[str, tuple[Path, bool]] = {}

    async def main() -> None:
        async def open_one(name: str) -> None:
            got[name] = await downloads.cached_copy(
                entry, face(remote), name, size=len(blobs[name][0]), etag=blobs[name][1],
                shown_path=f"data/{name}")

        remote.gate.clear()
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for name in blobs:
                    nursery.start_soon(open_one, name)
                    nursery.start_soon(open_one, name)
                await trio.testing.wait_all_tasks_blocked()
                remote.gate.set()

    trio.run(main)
    assert sorted(remote.calls) == sorted(blobs)
    assert downloads.started == {f"data/{name}": 1 for name in blobs}
    for name, (data, _) in blobs.items():
        path, downloaded = got[name]
        assert downloaded and path.read_bytes() == data
    assert len({path for path, _ in got.values()}) == len(blobs)
    assert temp_files(entry) == []


def test_a_filling_serves_what_is_written_and_its_end_only_once_checked(tmp_path: Path) -> None:
    async def main() -> None:
        filling = Filling(tmp_path / "copy", tmp_path / "copy.tmp", size=100)
        served: list[str] = []

        async def read(name: str, end: int) -> None:
            await filling.wait_for(end)
            served.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "head", 40)
            nursery.start_soon(read, "end", 100)
            await trio.testing.wait_all_tasks_blocked()
            assert served == []
            filling.advance(50)
            await trio.testing.wait_all_tasks_blocked()
            assert served == ["head"]
            filling.advance(100)  # every byte written, not yet checked
            await trio.testing.wait_all_tasks_blocked()
            assert served == ["head"]
            filling.passed()  # checked: the end need not wait for the copy to be durable
            await trio.testing.wait_all_tasks_blocked()
            assert served == ["head", "end"]
            filling.finish(RemoteError("no space left to keep the copy"))
        await filling.wait_for(100)  # bytes that passed stay readable

        failed = Filling(tmp_path / "other", tmp_path / "other.tmp", size=100)
        failed.advance(30)
        await failed.wait_for(30)  # served before the failure ...
        failed.finish(RemoteError("the bytes do not match"))
        for _ in range(2):  # ... and every read after it fails, each with its own error
            with pytest.raises(RemoteError, match="do not match"):
                await failed.wait_for(10)

    trio.run(main)


@pytest.mark.parametrize(("size", "expected"), [
    (5 << 20, 4 << 20),            # at least RANGE_MIN
    (256 << 20, 64 << 20),         # a share for each of the 4 connections
    (100 << 20, 25 << 20),
    (4 << 30, 64 << 20),           # at most RANGE_MAX
])
def test_range_size(size: int, expected: int) -> None:
    assert range_size(size, 4) == expected
