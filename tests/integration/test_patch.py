"""Edits of large files upload only what changed (patch.py).

Each test puts one blob of BIG bytes whose every 8-byte word holds its own offset (as
test_blocks.py does), mounts it with a block_read_min below its size, edits it through
the mount and checks the whole blob through the SDK; the requests go through the fault
proxy, which counts the bytes sent to Azurite and the server-side copies. The blob is
put in blocks of COMMITTED bytes (as the SDK and AzCopy put large blobs), so an edit
keeps every committed block it does not touch; one put in one request has no blocks to
keep, and its unchanged bytes are copied from a snapshot (as is a conflict copy's).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import subprocess
import sys
import uuid

import pytest
from azure.storage.blob import BlobBlock, BlobSasPermissions, generate_blob_sas

from blobmount.blocks import BLOCK
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY
from blobmount.tools import find_azcopy

from .conftest import FUSERMOUNT, blobmount, pid_alive, wait_for
from .faultproxy import FaultProxy
from .test_blocks import pattern

MiB = 1024 * 1024
BIG = 24 * MiB + 12_344
COMMITTED = 4 * MiB  # the blocks NAME is put in: six, and one of 12,344 bytes
NAME = "data/big.bin"
HOLD_UPLOADS = 600  # seconds: uploads wait for `blobmount sync`


@pytest.fixture
def edited(service):
    """A container holding NAME (BIG bytes of the pattern), put in blocks."""
    client = service.create_container(f"t{uuid.uuid4().hex[:20]}")
    blob = client.get_blob_client(NAME)
    blocks = []
    for index, offset in enumerate(range(0, BIG, COMMITTED)):
        block_id = f"{index:032d}"  # as the SDK names its own
        blob.stage_block(block_id, pattern(offset, min(COMMITTED, BIG - offset)))
        blocks.append(BlobBlock(block_id))
    blob.commit_block_list(blocks)
    yield client
    client.delete_container()


@pytest.fixture
def azcopy_put(service, tmp_path):
    """A container holding NAME put by AzCopy: in blocks whose IDs are raw bytes."""
    client = service.create_container(f"t{uuid.uuid4().hex[:20]}")
    source = tmp_path / "big.bin"
    source.write_bytes(pattern(0, BIG))
    sas = generate_blob_sas(AZURITE_ACCOUNT, client.container_name, NAME,
                            account_key=AZURITE_KEY, expiry=dt.datetime.now(dt.UTC)
                            + dt.timedelta(minutes=30),
                            permission=BlobSasPermissions(read=True, write=True, create=True))
    env = {**os.environ, "AZCOPY_LOG_LOCATION": str(tmp_path),
           "AZCOPY_JOB_PLAN_LOCATION": str(tmp_path)}
    subprocess.run([str(find_azcopy()), "copy", str(source), f"{client.url}/{NAME}?{sas}",
                    "--from-to", "LocalBlob", "--block-size-mb", str(COMMITTED // MiB)],
                   env=env, check=True, capture_output=True, timeout=120)
    source.unlink()
    yield client
    client.delete_container()


@pytest.fixture
def put_whole(service):
    """A container holding NAME put in one request: it has no committed blocks."""
    client = service.create_container(f"t{uuid.uuid4().hex[:20]}")
    client.upload_blob(NAME, pattern(0, BIG), length=BIG, max_concurrency=4)
    assert client.get_blob_client(NAME).get_block_list("committed") == ([], [])
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


def _committed(container) -> list[tuple[bytes, int]]:
    """The blob's committed blocks: their IDs (bytes: AzCopy's are not text) and sizes."""
    # The generated layer: the SDK's get_block_list leaves IDs that are not text encoded.
    listed = container.get_blob_client(NAME)._client.block_blob.get_block_list(
        list_type="committed")
    return [(base64.b64decode(block.name), block.size) for block in listed.committed_blocks]


@pytest.mark.parametrize("put_by", ["edited", "azcopy_put"])
def test_an_edit_in_the_middle_keeps_every_other_committed_block(mounter, proxy, request,
                                                                 put_by):
    edited = request.getfixturevalue(put_by)
    before = _committed(edited)
    assert len(before) == 7
    mount = mounter.mount(_config(mounter, edited, proxy))
    path = mount.path(f"c/{NAME}")
    middle = 3 * COMMITTED + 100  # in the fourth committed block, off a block's edge
    new = os.urandom(4096)
    _edit(path, middle, new)  # sync mode: close() returns once the blob holds it
    assert _blob(edited) == _expected([(middle, new)])
    # The block it fell in went up again whole (its other bytes fetched first); every
    # other one is named as it was, and nothing was copied server-side.
    after = _committed(edited)
    assert after[:3] + after[4:] == before[:3] + before[4:]
    assert after[3][0] not in {block_id for block_id, _ in before}
    assert len(after[3][0]) == len(before[0][0])  # an ID of the same length
    assert not proxy.copies, proxy.copies
    assert proxy.sent["PUT"] < COMMITTED + 64 * 1024, proxy.sent
    wait_for(lambda: not _snapshots(edited), what="the snapshot to be deleted")
    with open(path, "rb") as file:
        file.seek(middle - 10)
        assert file.read(5000) == _expected([(middle, new)])[middle - 10:middle + 4990]
    assert mount.status()["uploads"]["count"] == 0


def test_an_edit_of_a_blob_put_whole_copies_the_unchanged_bytes(mounter, put_whole, proxy):
    mount = mounter.mount(_config(mounter, put_whole, proxy))
    path = mount.path(f"c/{NAME}")
    middle = BIG // 2 + 100  # not on a block's edge: its block is fetched, then sent
    new = os.urandom(4096)
    _edit(path, middle, new)
    assert _blob(put_whole) == _expected([(middle, new)])
    # One block went up, plus the requests' heads; the rest was copied server-side.
    assert proxy.sent["PUT"] < BLOCK + 64 * 1024, proxy.sent
    assert sum(proxy.copies.values()) >= 2, proxy.copies  # before it and after it
    # The blob was not read whole either: one block for the part the write left.
    assert proxy.count("GET", "/" + NAME) <= 2
    wait_for(lambda: not _snapshots(put_whole), what="the snapshot to be deleted")
    # Read back through the mount, anywhere (the edited block again from the blob).
    with open(path, "rb") as file:
        file.seek(middle - 10)
        assert file.read(5000) == _expected([(middle, new)])[middle - 10:middle + 4990]
        file.seek(BIG - 100)
        assert file.read() == pattern(BIG - 100, 100)


def test_an_append_and_an_edit_across_two_committed_blocks(mounter, edited, proxy):
    mount = mounter.mount(_config(mounter, edited, proxy))
    path = mount.path(f"c/{NAME}")
    tail = os.urandom(MiB)
    with open(path, "ab", buffering=0) as file:
        file.write(tail)
    expected = pattern(0, BIG) + tail
    assert _blob(edited) == expected
    # The short last block goes again with the new bytes; the six before it stay.
    assert proxy.sent["PUT"] < MiB + 2 * BLOCK, proxy.sent
    assert len(_committed(edited)) == 7
    sent = proxy.sent["PUT"]
    edge = 2 * COMMITTED - 3000
    new = os.urandom(8192)  # the ends of two committed blocks: both go again
    _edit(path, edge, new)
    expected = expected[:edge] + new + expected[edge + len(new):]
    assert _blob(edited) == expected
    assert proxy.sent["PUT"] - sent < 2 * COMMITTED + 64 * 1024, proxy.sent
    assert not proxy.copies, proxy.copies
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
    # The local version: our block on the bytes of the version we edited, copied from
    # its snapshot (another blob cannot name the edited one's blocks).
    assert _blob(edited, conflicts[0]) == _expected([(middle, new)])
    assert proxy.sent["PUT"] < BLOCK + 64 * 1024, proxy.sent
    assert sum(proxy.copies.values()) >= 2, proxy.copies
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
    # The upload starts, and its two staging requests (the two committed blocks the
    # edits fell in, sent side by side) hang until set_mode: the commit is never sent.
    proxy.stall_next(2, method="PUT")
    puts = proxy.count("PUT", "/" + NAME)  # the snapshot's
    sync = subprocess.Popen([sys.executable, "-m", "blobmount", "sync", str(mount.mountpoint)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proxy.count("PUT", "/" + NAME) >= puts + 2,
                 what="the upload to stage its blocks")
        _kill(mounter, mount)
    finally:
        sync.kill()
        sync.wait()
    assert _blob(edited) == pattern(0, BIG)  # nothing committed
    proxy.set_mode("forward")  # the stalled requests end; new ones pass
    mount = mounter.mount(config)
    blobmount("sync", str(mount.mountpoint), check=True)
    assert _blob(edited) == _expected([(first, new[0]), (second, new[1])])
    # Planned again from the committed list: the five blocks not edited are kept.
    assert not proxy.copies, proxy.copies
    assert len(_committed(edited)) == 7
    assert mount.status()["uploads"]["count"] == 0
    wait_for(lambda: not _snapshots(edited), what="the snapshot to be deleted")
