"""Edits of large files upload only what changed (patch.py).

Each test puts one blob of BIG bytes whose every 8-byte word holds its own offset (as
test_blocks.py does), mounts it with a block_read_min below its size, edits it through
the mount and checks the whole blob through the SDK; the requests go through the fault
proxy, which counts the bytes sent to Azurite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from blobmount.blocks import BLOCK
from blobmount.config import AZURITE_ACCOUNT

from .conftest import FUSERMOUNT, blobmount, pid_alive, wait_for
from .faultproxy import FaultProxy
from .test_blocks import pattern

MiB = 1024 * 1024
BIG = 24 * MiB + 12_344
NAME = "data/big.bin"
HOLD_UPLOADS = 600  # seconds: uploads wait for `blobmount sync`


@pytest.fixture
def edited(service):
    """A container holding NAME (BIG bytes of the pattern)."""
    client = service.create_container(f"t{uuid.uuid4().hex[:20]}")
    client.upload_blob(NAME, pattern(0, BIG), length=BIG, max_concurrency=4)
    yield client
    client.delete_container()


@pytest.fixture
def proxy(azurite):
    with FaultProxy(azurite.port) as running:
        yield running


def _config(mounter, container, proxy, **entry):
    return mounter.config([{"local": "c", "container": container.container_name, **entry}],
                          endpoint=proxy.endpoint(AZURITE_ACCOUNT), block_read_min="8MiB",
                          **({"upload_batch_window": HOLD_UPLOADS}
                             if entry.get("upload") == "async" else {}))


def _blob(container, name: str = NAME) -> bytes:
    return container.get_blob_client(name).download_blob().readall()


def _snapshots(container) -> list[str]:
    return [blob.name for blob in container.list_blobs(include=["snapshots"])
            if blob.snapshot]


def _edit(path, offset: int, data: bytes) -> None:
    with open(path, "r+b", buffering=0) as file:
        file.seek(offset)
        assert file.write(data) == len(data)


def _expected(edits: list[tuple[int, bytes]], size: int = BIG) -> bytes:
    data = bytearray(pattern(0, size))
    for offset, new in edits:
        data[offset:offset + len(new)] = new
    return bytes(data)


def test_an_edit_in_the_middle_sends_only_its_block(mounter, edited, proxy):
    mount = mounter.mount(_config(mounter, edited, proxy))
    path = mount.path(f"c/{NAME}")
    middle = BIG // 2 + 100  # not on a block's edge: its block is fetched, then sent
    new = os.urandom(4096)
    _edit(path, middle, new)  # sync mode: close() returns once the blob holds it
    assert _blob(edited) == _expected([(middle, new)])
    # One block went up, plus the requests' heads; the rest was copied server-side.
    assert proxy.sent["PUT"] < BLOCK + 64 * 1024, proxy.sent
    # The blob was not read whole either: one block for the part the write left.
    assert proxy.count("GET", "/" + NAME) <= 2
    wait_for(lambda: not _snapshots(edited), what="the snapshot to be deleted")
    # Read back through the mount, anywhere (the edited block again from the blob).
    with open(path, "rb") as file:
        file.seek(middle - 10)
        assert file.read(5000) == _expected([(middle, new)])[middle - 10:middle + 4990]
        file.seek(BIG - 100)
        assert file.read() == pattern(BIG - 100, 100)
    assert mount.status()["uploads"]["count"] == 0


def test_an_append_and_an_edit_across_a_block_edge(mounter, edited, proxy):
    mount = mounter.mount(_config(mounter, edited, proxy))
    path = mount.path(f"c/{NAME}")
    tail = os.urandom(MiB)
    with open(path, "ab", buffering=0) as file:
        file.write(tail)
    expected = pattern(0, BIG) + tail
    assert _blob(edited) == expected
    assert proxy.sent["PUT"] < MiB + 2 * BLOCK, proxy.sent
    sent = proxy.sent["PUT"]
    edge = BLOCK * 20 - 3000
    new = os.urandom(8192)  # the ends of two blocks: both fetched, both sent
    _edit(path, edge, new)
    expected = expected[:edge] + new + expected[edge + len(new):]
    assert _blob(edited) == expected
    assert proxy.sent["PUT"] - sent < 2 * BLOCK + 64 * 1024, proxy.sent
    assert path.stat().st_size == BIG + MiB
    with open(path, "rb") as file:
        file.seek(edge - 1)
        assert file.read(len(new) + 2) == expected[edge - 1:edge + len(new) + 1]


def test_a_blob_changed_before_the_upload_keeps_both(mounter, edited, proxy):
    mount = mounter.mount(_config(mounter, edited, proxy, upload="async"))
    path = mount.path(f"c/{NAME}")
    middle = BIG // 3
    new = os.urandom(4096)
    _edit(path, middle, new)
    assert mount.status()["uploads"]["count"] == 1
    theirs = os.urandom(3 * MiB)
    edited.upload_blob(NAME, theirs, overwrite=True)
    blobmount("sync", str(mount.mountpoint), check=False)
    names = [blob.name for blob in edited.list_blobs()]
    conflicts = [name for name in names if ".conflict-" in name]
    assert len(conflicts) == 1, names
    assert _blob(edited) == theirs
    # The local version: our block on the bytes of the version we edited (its snapshot).
    assert _blob(edited, conflicts[0]) == _expected([(middle, new)])
    assert proxy.sent["PUT"] < BLOCK + 64 * 1024, proxy.sent
    wait_for(lambda: not _snapshots(edited), what="the snapshot to be deleted")
    assert mount.status()["uploads"]["count"] == 0


def _kill(mounter, mount) -> None:
    os.kill(mount.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(mount.pid), timeout=10, what="the daemon to die")
    subprocess.run([FUSERMOUNT, "-u", "-z", str(mount.mountpoint)], check=True)
    mounter.live.remove(mount)


def test_a_daemon_killed_before_the_commit_finishes_after_the_remount(mounter, edited,
                                                                      proxy):
    config = _config(mounter, edited, proxy, upload="async")
    mount = mounter.mount(config)
    path = mount.path(f"c/{NAME}")
    first, second = BIG // 4, BIG - 5000
    new = [os.urandom(4096), os.urandom(1000)]
    _edit(path, first, new[0])
    _edit(path, second, new[1])
    # The upload starts, and its four staging requests (copy, block, copy, block: all
    # sent side by side) hang until set_mode: the commit is never sent.
    proxy.stall_next(4, method="PUT")
    sync = subprocess.Popen([sys.executable, "-m", "blobmount", "sync", str(mount.mountpoint)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proxy.count("PUT", "/" + NAME) >= 1, what="the upload to start")
        _kill(mounter, mount)
    finally:
        sync.kill()
        sync.wait()
    assert _blob(edited) == pattern(0, BIG)  # nothing committed
    proxy.set_mode("forward")  # the stalled requests end; new ones pass
    mount = mounter.mount(config)
    blobmount("sync", str(mount.mountpoint), check=True)
    assert _blob(edited) == _expected([(first, new[0]), (second, new[1])])
    assert mount.status()["uploads"]["count"] == 0
    wait_for(lambda: not _snapshots(edited), what="the snapshot to be deleted")
