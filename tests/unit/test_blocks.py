"""Blocks: sparse copies of large blobs, one fetch per block, the read-ahead window,
versions never mixed, eviction block by block; with the in-memory FakeRemote."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount.blocks import BLOCK, RUN_MAX, Blocks
from blobmount.cache import Cache, block_key
from blobmount.config import Account, MountEntry
from blobmount.errors import RemoteConflict
from blobmount.eviction import Evictor
from blobmount.store import Store

from .fakeremote import FakeRemote, face

ACCOUNT = Account(name="acct", account_name="acct", endpoint="https://acct.blob.core.windows.net",
                  account_key="a2V5")
LAST = max(40, 4 * RUN_MAX // BLOCK)  # the last block: beyond three RUN_MAX stretches
SIZE = LAST * BLOCK + 1234  # the last block is short
TIMEOUT = 10


def _data(size: int = SIZE, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(256)) * (size // 256) + bytes(size % 256)


@pytest.fixture
def parts(tmp_path: Path):
    store = Store(tmp_path / "store.sqlite")
    cache = Cache(store)
    remote = FakeRemote()
    remote.put_elsewhere("big.bin", _data())
    entry = MountEntry(local="d", account=ACCOUNT,
                       container="cont", prefix="", cache_dir=tmp_path / "cache")
    yield store, cache, remote, entry
    store.close()


def _gets(remote: FakeRemote) -> list[tuple[int, int]]:
    return [(call[2], call[3]) for call in remote.calls if call[0] == "read_blocks"]


def _open(blocks: Blocks, cache: Cache, remote: FakeRemote, entry: MountEntry, **options):
    blob = remote.blobs["big.bin"]
    return blocks.open(face(remote), "big.bin", cache.path_for(entry, "big.bin"),
                       size=len(blob.data), etag=blob.etag, **options)


async def _idle(blocks: Blocks) -> None:
    """Wait until no fetch is under way (read-ahead runs in the background)."""
    with trio.fail_after(TIMEOUT):
        while blocks.in_use():
            await trio.sleep(0.001)


def test_reads_fetch_only_the_blocks_they_cover(parts):
    store, cache, remote, entry = parts
    data = remote.blobs["big.bin"].data

    async def main():
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            reader, fresh = _open(blocks, cache, remote, entry)
            assert fresh
            offset = 5 * BLOCK - 10  # across an edge: two blocks
            assert await reader.read(offset, 20) == data[offset:offset + 20]
            assert await reader.read(SIZE - 100, 4096) == data[-100:]  # the short last
            assert await reader.read(SIZE + 5, 10) == b""
            await _idle(blocks)
            assert sorted(_gets(remote)) == [(4 * BLOCK, 6 * BLOCK), (LAST * BLOCK, SIZE)]
            record = store.cached_file(str(cache.path_for(entry, "big.bin")))
            assert record.state == "partial" and record.size == 2 * BLOCK + 1234
            assert not cache.usable(cache.path_for(entry, "big.bin"), record.etag)
            reader.close()

    trio.run(main)


def test_readers_of_one_block_share_one_get(parts):
    _store, cache, remote, entry = parts
    data = remote.blobs["big.bin"].data

    async def main():
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            entered = threading.Event()
            remote.hold("big.bin", entered.set)
            readers = [_open(blocks, cache, remote, entry)[0] for _ in range(3)]
            got: dict[int, bytes] = {}

            async def read(index: int, offset: int) -> None:
                got[index] = await readers[index].read(offset, 100)

            nursery.start_soon(read, 0, 9 * BLOCK + 1)
            await trio.to_thread.run_sync(entered.wait, TIMEOUT)
            nursery.start_soon(read, 1, 9 * BLOCK + 5000)
            nursery.start_soon(read, 2, 9 * BLOCK + BLOCK - 100)
            await trio.testing.wait_all_tasks_blocked()
            remote.release_all()
            with trio.fail_after(TIMEOUT):
                while len(got) < 3:
                    await trio.sleep(0.001)
            for index, offset in enumerate((9 * BLOCK + 1, 9 * BLOCK + 5000,
                                            9 * BLOCK + BLOCK - 100)):
                assert got[index] == data[offset:offset + 100]
            assert _gets(remote) == [(9 * BLOCK, 10 * BLOCK)]
            for reader in readers:
                reader.close()

    trio.run(main)


def test_reads_in_order_get_a_window_that_doubles(parts):
    _store, cache, remote, entry = parts
    data = remote.blobs["big.bin"].data

    async def main():
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            reader, _ = _open(blocks, cache, remote, entry, window_max=RUN_MAX)
            windows = []
            offset, end = 0, RUN_MAX + RUN_MAX // 2
            while offset < end:
                assert await reader.read(offset, 128 * 1024) == data[offset:offset + 128 * 1024]
                windows.append(reader.window)
                offset += 128 * 1024
            # None after the first read: a header read and a seek cost one GET.
            assert windows[:6] == [0, *(min(RUN_MAX, BLOCK * 2 ** n) for n in range(5))]
            await _idle(blocks)
            gets = _gets(remote)
            # Every block once, in GETs of at most RUN_MAX, up to the window's end
            # (rounded up to a RUN_MAX edge).
            covered = sorted(block for start, end in gets for block in range(start, end, BLOCK))
            assert covered == sorted(set(covered))
            assert all(end - start <= RUN_MAX for start, end in gets)
            assert max(end for _, end in gets) <= -(-(end + RUN_MAX) // RUN_MAX) * RUN_MAX
            # Once the window is on its way, it goes by whole RUN_MAX stretches, not a
            # GET per block as the reads move it on. (Those GETs run side by side, so
            # they are compared in order of offset, not of their ending.)
            assert sorted((start, end) for start, end in gets if start >= RUN_MAX) == [
                (start, start + RUN_MAX) for start in range(RUN_MAX, 3 * RUN_MAX, RUN_MAX)]
            # A jump drops the window: nothing is fetched ahead of a random read.
            before = len(gets)
            far = (LAST - 2) * BLOCK
            assert await reader.read(far + 7, 10) == data[far + 7:far + 17]
            assert reader.window == 0
            await _idle(blocks)
            assert _gets(remote)[before:] == [(far, far + BLOCK)]
            reader.close()

    trio.run(main)


def test_a_changed_blob_is_never_mixed_in(parts):
    store, cache, remote, entry = parts
    old = remote.blobs["big.bin"].data

    async def main():
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            reader, _ = _open(blocks, cache, remote, entry)
            assert await reader.read(BLOCK * 3, 10) == old[BLOCK * 3:BLOCK * 3 + 10]
            remote.put_elsewhere("big.bin", _data(seed=2))
            with pytest.raises(RemoteConflict):
                await reader.read(BLOCK * 20, 10)
            # What it holds of its own version still reads.
            assert await reader.read(BLOCK * 3, 10) == old[BLOCK * 3:BLOCK * 3 + 10]
            # A reader of the new version gets a new copy: no block of the old one.
            new, fresh = _open(blocks, cache, remote, entry)
            assert fresh
            path = str(cache.path_for(entry, "big.bin"))
            assert store.cached_blocks_in(path, 0, SIZE) == {}
            assert await new.read(BLOCK * 3, 10) == _data(seed=2)[BLOCK * 3:BLOCK * 3 + 10]
            # The old handle goes on with its own bytes, recording nothing of them.
            assert await reader.read(BLOCK * 3, 10) == old[BLOCK * 3:BLOCK * 3 + 10]
            assert set(store.cached_blocks_in(path, 0, SIZE)) == {BLOCK * 3}
            reader.close()
            new.close()

    trio.run(main)


def test_blocks_are_kept_across_remounts_and_checked(parts):
    store, cache, remote, entry = parts
    data = remote.blobs["big.bin"].data
    path = cache.path_for(entry, "big.bin")

    async def read_some(offsets) -> bool:
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            reader, fresh = _open(blocks, cache, remote, entry)
            for offset in offsets:
                assert await reader.read(offset, 10) == data[offset:offset + 10]
            await _idle(blocks)
            reader.close()
            return fresh

    assert trio.run(read_some, [BLOCK * 2 + 1, BLOCK * 6 + 1])
    with open(path, "r+b") as file:  # lost from the disk after a crash, say
        file.seek(BLOCK * 6)
        file.write(bytes(100))
    remote.calls.clear()
    assert not trio.run(read_some, [BLOCK * 2 + 1, BLOCK * 6 + 1])
    assert _gets(remote) == [(BLOCK * 6, BLOCK * 7)]


def test_eviction_drops_blocks_not_in_use(parts, tmp_path):
    store, cache, remote, entry = parts
    entry = MountEntry(local="d", account=entry.account, container="cont", prefix="",
                       cache_dir=entry.cache_dir, cache_max_bytes=4 * BLOCK)
    data = remote.blobs["big.bin"].data
    path = cache.path_for(entry, "big.bin")

    async def main():
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            evictor = Evictor(store, cache, [entry], low_watermark=0.5)
            evictor.protect(blocks.in_use)
            reader, _ = _open(blocks, cache, remote, entry)
            for index in range(8):
                await reader.read(BLOCK * (3 * index) + 1, 10)
            await _idle(blocks)
            blocks_before = os.stat(path).st_blocks
            pinned = 3 * 7 * BLOCK  # the newest block, as if a read were using it
            reader.file.pins[pinned] += 1
            assert block_key(str(path), pinned) in blocks.in_use()
            evictor.pass_once()
            left = store.cached_blocks_in(str(path), 0, SIZE)
            assert len(left) == 2 and pinned in left  # down to half of 4 blocks
            # The record counts the blocks left. Which one stays beside the pinned one
            # is the latest fetched, which read-ahead's timing decides: maybe the short
            # last block.
            held = sum(min(BLOCK, SIZE - start) for start in left)
            assert store.cached_file(str(path)).size == held
            assert os.stat(path).st_blocks < blocks_before  # the bytes are freed
            reader.file.pins[pinned] -= 1
            # What went is fetched again when read.
            assert await reader.read(1, 10) == data[1:11]
            reader.close()

    trio.run(main)


def test_a_writer_replacing_the_file_in_place_waits_for_fetches_into_it(parts):
    _store, cache, remote, entry = parts
    data = remote.blobs["big.bin"].data
    path = cache.path_for(entry, "big.bin")

    async def main():
        async with trio.open_nursery() as nursery:
            blocks = Blocks(cache, min_size=BLOCK)
            blocks.run_in(nursery)
            reader, _ = _open(blocks, cache, remote, entry)
            entered = threading.Event()
            remote.hold("big.bin", entered.set)
            got = []

            async def read() -> None:
                got.append(await reader.read(BLOCK * 4, 100))

            nursery.start_soon(read)
            await trio.to_thread.run_sync(entered.wait, TIMEOUT)
            settled = trio.Event()

            async def settle() -> None:
                await blocks.settle(path)
                settled.set()

            nursery.start_soon(settle)
            await trio.testing.wait_all_tasks_blocked()
            assert not settled.is_set()  # the fetch still writes into the file
            remote.release_all()
            with trio.fail_after(TIMEOUT):
                await settled.wait()
            # The writer's turn: O_TRUNC in place. No fetch of the reader lands in it.
            with open(path, "r+b") as file:
                file.truncate(0)
                file.write(b"the writer's bytes")
            with trio.fail_after(TIMEOUT):
                while not got:
                    await trio.sleep(0.001)
            assert got == [data[BLOCK * 4:BLOCK * 4 + 100]]
            assert await reader.read(BLOCK * 8, 100) == data[BLOCK * 8:BLOCK * 8 + 100]
            await _idle(blocks)
            assert path.read_bytes() == b"the writer's bytes"
            reader.close()

    trio.run(main)
