"""Large files read by blocks: a sparse cached copy, ranged GETs, limits per block.

One blob of BIG bytes, put once for the module, whose every 8-byte word holds its own
offset (little-endian), so any range read through the mount is checked without a copy.
Its size is no multiple of a block: the last block is short. BLOBMOUNT_TEST_HUGE=1
makes it 3 GiB (slow: minutes to put into Azurite).
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import random
import threading
import uuid
from array import array
from pathlib import Path

import pytest

from blobmount.blocks import BLOCK
from blobmount.config import AZURITE_ACCOUNT

from .conftest import blobmount
from .faultproxy import FaultProxy

MiB = 1024 * 1024
HUGE = os.environ.get("BLOBMOUNT_TEST_HUGE") == "1"
BIG = (3 * 1024 if HUGE else 96) * MiB + 12_344
NAME = "data/big.bin"


def pattern(offset: int, length: int) -> bytes:
    """The blob's bytes [offset, offset + length): each word holds its own offset."""
    first = offset // 8
    words = array("Q", range(first * 8, (offset + length + 7) // 8 * 8, 8))
    skip = offset - first * 8
    return words.tobytes()[skip:skip + length]


def _chunks():
    step = 8 * MiB
    for offset in range(0, BIG, step):
        yield pattern(offset, min(step, BIG - offset))


@pytest.fixture(scope="module")
def big(service):
    """A container holding NAME (BIG bytes of the pattern) for the whole module."""
    client = service.create_container(f"t{uuid.uuid4().hex[:20]}")
    client.upload_blob(NAME, b"".join(_chunks()) if not HUGE else _Stream(), length=BIG,
                       max_concurrency=4)
    yield client
    client.delete_container()


class _Stream:
    """The pattern as a file-like object, for a blob too big to hold in memory."""

    def __init__(self) -> None:
        self._chunks = _chunks()
        self._left = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._left) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._left += chunk
        data, self._left = (self._left, b"") if size < 0 else (self._left[:size],
                                                                self._left[size:])
        return data


def _config(mounter, container, *, endpoint=None, **entry):
    return mounter.config([{"local": "c", "container": container.container_name, **entry}],
                          endpoint=endpoint, block_read_min="8MiB")


def _cache_ls(mount) -> dict:
    out = blobmount("cache", "ls", str(mount.path("c")), "--json", check=True).stdout
    return {item["path"]: item for item in json.loads(out)}


def _blob_gets(proxy: FaultProxy) -> int:
    return proxy.count("GET", "/" + NAME)


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


def test_reads_anywhere_fetch_only_their_blocks(mounter, big):
    mount = mounter.mount(_config(mounter, big))
    path = mount.path(f"c/{NAME}")
    assert path.stat().st_size == BIG
    rng = random.Random(14)
    reads = [(rng.randrange(BIG - 4096), 4096) for _ in range(20)]
    reads += [(BLOCK * 7 - 3, 10), (BLOCK * 9 - 4096, 8192),  # across block edges
              (BIG - 5000, 5000), (BIG - 10, 100)]            # the short last block
    with open(path, "rb", buffering=0) as file:
        for offset, length in reads:
            assert os.pread(file.fileno(), length, offset) == pattern(
                offset, min(length, BIG - offset)), (offset, length)
    listed = _cache_ls(mount)
    assert listed[f"c/{NAME}"]["state"] == "partial"
    assert mount.status()["blocks"]["bytes"] == listed[f"c/{NAME}"]["size"]
    # What was cached: the blocks of those reads (and the kernel's read-ahead), no more.
    assert listed[f"c/{NAME}"]["size"] <= (len(reads) + 4) * 2 * MiB
    # mmap reads through the same blocks.
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
        for offset in (0, BLOCK * 33 + 17, BIG - 4096):
            assert view[offset:offset + 4096] == pattern(offset, min(4096, BIG - offset))


def test_two_readers_of_one_block_share_its_get(mounter, big, azurite):
    with FaultProxy(azurite.port) as proxy:
        mount = mounter.mount(_config(mounter, big, endpoint=proxy.endpoint(AZURITE_ACCOUNT)))
        path = mount.path(f"c/{NAME}")
        block = BLOCK * 40
        start = threading.Barrier(2)
        results: dict[int, bytes] = {}

        def reader(offset: int) -> None:
            with open(path, "rb", buffering=0) as file:
                start.wait()
                results[offset] = os.pread(file.fileno(), 4096, offset)

        offsets = (block + 8192, block + BLOCK // 2)  # two pages of one block
        threads = [threading.Thread(target=reader, args=(offset,)) for offset in offsets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for offset in offsets:
            assert results[offset] == pattern(offset, 4096)
        assert _blob_gets(proxy) == 1


def test_sequential_read_through_a_smaller_cache(mounter, big):
    limit = 32 * MiB
    mount = mounter.mount(_config(mounter, big, cache_max_bytes=limit))
    path = mount.path(f"c/{NAME}")
    cache_files = mounter.tmp_path / "cache"
    peak_disk = peak_rss = 0
    with open(path, "rb", buffering=0) as file:
        offset = 0
        while offset < BIG:
            data = file.read(4 * MiB)
            assert data == pattern(offset, min(4 * MiB, BIG - offset)), offset
            offset += len(data)
            peak_disk = max(peak_disk, _allocated(cache_files))
            peak_rss = max(peak_rss, _rss(mount.pid))
    print(f"peak cache {peak_disk / MiB:.1f} MiB (limit {limit / MiB:.0f}), daemon RSS"
          f" {peak_rss / MiB:.0f} MiB")
    assert offset == BIG
    # Near its limit all along: at most the read-ahead window (a quarter of it) and
    # what lands before the evictor runs over.
    assert peak_disk < limit * 1.5
    assert peak_rss < 150 * MiB
    assert mount.status()["pid"] == mount.pid


def _allocated(folder: Path) -> int:
    """Bytes the files under `folder` take on the disk (sparse files: their blocks)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_bad_block_md5_is_fetched_again_then_eio(mounter, big, azurite):
    with FaultProxy(azurite.port) as proxy:
        mount = mounter.mount(_config(mounter, big, endpoint=proxy.endpoint(AZURITE_ACCOUNT)))
        path = mount.path(f"c/{NAME}")
        assert path.stat().st_size == BIG  # listed: the next GETs are the blob's
        proxy.corrupt_next(1, method="GET")
        offset = BLOCK * 50 + 100
        assert _read(path, offset, 1000) == pattern(offset, 1000)
        assert "do not match their MD5; trying again" in mount.log()
        proxy.set_mode("corrupt")  # every try of the block is bad
        offset = BLOCK * 60 + 100
        with open(path, "rb", buffering=0) as file:
            with pytest.raises(OSError) as failed:
                os.pread(file.fileno(), 1000, offset)
            assert failed.value.errno == errno.EIO
            proxy.set_mode("forward")
            # Nothing bad was kept: the next read fetches the block again, whole.
            assert os.pread(file.fileno(), 1000, offset) == pattern(offset, 1000)


def test_remount_reuses_blocks_and_checks_them(mounter, big, azurite):
    with FaultProxy(azurite.port) as proxy:
        config = _config(mounter, big, endpoint=proxy.endpoint(AZURITE_ACCOUNT))
        mount = mounter.mount(config)
        path = mount.path(f"c/{NAME}")
        offsets = [BLOCK * 70 + 5, BLOCK * 80 + 5]
        for offset in offsets:
            assert _read(path, offset, 100) == pattern(offset, 100)
        mounter.unmount(mount)
        # A block whose bytes did not survive (no fsync per block) is noticed.
        copy = next(p for p in (mounter.tmp_path / "cache").rglob("*") if p.is_file()
                    and p.stat().st_size == BIG)
        with open(copy, "r+b") as file:
            file.seek(BLOCK * 80)
            file.write(b"\0" * 4096)
        before = _blob_gets(proxy)
        mount = mounter.mount(config)
        assert _read(mount.path(f"c/{NAME}"), offsets[0], 100) == pattern(offsets[0], 100)
        assert _blob_gets(proxy) == before  # from the cache
        assert _read(mount.path(f"c/{NAME}"), offsets[1], 100) == pattern(offsets[1], 100)
        assert _blob_gets(proxy) == before + 1  # fetched again
        assert "does not match its CRC-32" in mount.log()


def test_blob_changed_between_two_reads_of_one_handle(mounter, big):
    mount = mounter.mount(_config(mounter, big))
    name = "data/changing.bin"
    big.upload_blob(name, pattern(0, 24 * MiB), overwrite=True)
    path = mount.path(f"c/{name}")
    with open(path, "rb", buffering=0) as file:
        assert os.pread(file.fileno(), 100, 10) == pattern(10, 100)
        big.upload_blob(name, b"\x01" * (24 * MiB), overwrite=True)
        # Another version: never mixed in; the handle's version is gone from the
        # container, so its uncached bytes fail.
        with pytest.raises(OSError) as failed:
            os.pread(file.fileno(), 100, 20 * MiB)
        assert failed.value.errno == errno.EIO
        assert os.pread(file.fileno(), 100, 10) == pattern(10, 100)
    # The next open reads the new version.
    assert _read(path, 20 * MiB, 100) == b"\x01" * 100


def test_cached_blocks_read_while_the_account_is_away(mounter, big, azurite):
    with FaultProxy(azurite.port) as proxy:
        mount = mounter.mount(_config(mounter, big, endpoint=proxy.endpoint(AZURITE_ACCOUNT)))
        path = mount.path(f"c/{NAME}")
        held = BLOCK * 90
        with open(path, "rb", buffering=0) as file:
            assert os.pread(file.fileno(), 4096, held) == pattern(held, 4096)
            proxy.set_mode("drop")
            # The far end of the same block: not in the kernel's pages, in the copy.
            far = held + BLOCK - 4096
            assert os.pread(file.fileno(), 4096, far) == pattern(far, 4096)
            with pytest.raises(OSError) as failed:
                os.pread(file.fileno(), 4096, BLOCK * 120)
            assert failed.value.errno == errno.EIO
            # Still held, and now known to be away: answered without asking.
            assert os.pread(file.fileno(), 4096, far - 8192) == pattern(far - 8192, 4096)
            proxy.set_mode("forward")
