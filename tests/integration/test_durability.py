"""No write a program was told had succeeded is ever lost: not to a kill -9 of the
daemon, not to an account that stops answering, not to an unmount."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    generate_container_sas,
)

from blobmount.azure import MTIME_KEY, format_mtime
from blobmount.azurite import Azurite
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import FUSERMOUNT, Mounter, blobmount, is_mounted, pid_alive, wait_for

pytestmark = pytest.mark.integration

# The worker waits this long before a batch: nothing goes up before the test acts.
HOLD_UPLOADS = 600
# No sync of the cache (copysync.py) comes before the test's kill -9.
HOLD_SYNC = 600


def blobs(container: ContainerClient) -> dict[str, bytes]:
    return {item.name: container.download_blob(item.name).readall()
            for item in container.list_blobs()}


def write_files(root: Path, count: int, tag: str) -> dict[str, bytes]:
    """Write `count` files of a few sizes under root; what each holds."""
    written = {}
    for number in range(count):
        data = f"{tag} {number}\n".encode() * (1 + number * 97)
        (root / f"{tag}-{number:02d}.txt").write_bytes(data)
        written[f"{tag}-{number:02d}.txt"] = data
    return written


#: A time set by utimensat after a close, with nanoseconds (2020-09-13T12:26:40.123456789Z)
TOUCHED_NS = 1_600_000_000_123_456_789


def kill_daemon(mounter: Mounter, mount) -> None:
    """kill -9 the daemon, and detach the dead mount it leaves."""
    os.kill(mount.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(mount.pid), timeout=10, what="the daemon to die")
    subprocess.run([FUSERMOUNT, "-u", "-z", str(mount.mountpoint)], check=True)
    mounter.live.remove(mount)


def test_kill_9_after_close_loses_nothing(mounter, container):
    container.upload_blob("existing.txt", b"the old bytes\n")
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}], upload_batch_window=HOLD_UPLOADS)
    mount = mounter.mount(config)
    try:
        root = mount.path("d")
        expected = write_files(root, 20, "file")
        os.mkdir(root / "sub")
        expected["sub/nested.bin"] = os.urandom(2_000_000)
        (root / "sub/nested.bin").write_bytes(expected["sub/nested.bin"])
        with open(root / "existing.txt", "ab") as writer:
            writer.write(b"appended before the kill\n")
        expected["existing.txt"] = b"the old bytes\nappended before the kill\n"
        # After its close, as `tar x` does: only its journal row's metadata changes,
        # committed with no fsync, which a killed daemon keeps all the same.
        os.chmod(root / "file-03.txt", 0o640)
        os.utime(root / "file-03.txt", ns=(TOUCHED_NS, TOUCHED_NS))
        # 22 files and the marker of `sub` (async: a mkdir journals it)
        assert mount.status()["uploads"]["count"] == 23
        kill_daemon(mounter, mount)
        # Nothing went up: the journal is all that holds these bytes now.
        assert blobs(container) == {"existing.txt": b"the old bytes\n"}
    except BaseException:
        mounter.cleanup()
        raise
    with mounter.mounted(config) as mount:
        blobmount("sync", str(mount.mountpoint), check=True)
        assert blobs(container) == {**expected, "sub": b""}
        for name, data in expected.items():
            assert mount.path(f"d/{name}").read_bytes() == data
        assert mount.status()["uploads"]["count"] == 0
        touched = container.get_blob_client("file-03.txt").get_blob_properties().metadata
        assert int(touched["mode"], 8) & 0o7777 == 0o640
        assert touched[MTIME_KEY] == format_mtime(TOUCHED_NS)


def test_small_files_lost_from_the_cache_by_a_crash_come_back_from_the_journal(
        mounter, container):
    """A small file's journal row holds its bytes, so its close fsyncs no copy: a crash
    of the machine may lose such a copy or cut it short. Here the daemon is killed and
    the copies are cut and deleted as a power loss could leave them; the remount makes
    them again from the journal, and the container gets every file whole."""
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}], upload_batch_window=HOLD_UPLOADS,
                            cache_sync_interval=HOLD_SYNC)
    mount = mounter.mount(config)
    try:
        expected = write_files(mount.path("d"), 6, "small")
        kill_daemon(mounter, mount)
    except BaseException:
        mounter.cleanup()
        raise
    database = Path(yaml.safe_load(config.read_text())["cache_dir"]) / "blobmount.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as db:
        copies = [Path(path) for (path,) in db.execute(
            "SELECT path FROM uploads WHERE data IS NOT NULL ORDER BY blob")]
    assert len(copies) == len(expected)  # each row holds its bytes
    copies[0].unlink()
    copies[1].write_bytes(b"")
    with open(copies[2], "r+b") as cut:
        cut.truncate(3)
    with mounter.mounted(config) as mount:
        blobmount("sync", str(mount.mountpoint), check=True)
        assert blobs(container) == expected
        for name, data in expected.items():
            assert mount.path(f"d/{name}").read_bytes() == data
    assert mount.log().count("is made again from its journal row") == 3


#: More files than the writer can close before the kill, however fast the mount is
#: (uploads wait for the burst of closes to pause, up to 5 s): 5,000 were once written
#: in full before it.
WRITER_FILES = 50_000
#: A program writing files one by one as tar does (create, write, set times and mode,
#: close), each a few bytes to 100 KiB (journaled with its bytes or fsynced), which
#: logs each name once its close has returned; it stops at the first error.
TAR_LIKE = """
import os, sys
root, log, WRITER_FILES = sys.argv[1], open(sys.argv[2], "w"), int(sys.argv[3])
for number in range(WRITER_FILES):
    name = f"d{number // 50:03d}/f{number:05d}"
    os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
    size = 100_000 if number % 7 == 0 else 1 + number * 13 % 20_000
    with open(os.path.join(root, name), "wb") as out:
        out.write(name.encode().ljust(size, b"."))
        os.utime(out.fileno(), ns=(10**18, 10**18))
        os.fchmod(out.fileno(), 0o640)
    log.write(name + "\\n")
    log.flush()
"""


def tar_like_bytes(name: str) -> bytes:
    number = int(name.rsplit("f", 1)[1])
    return name.encode().ljust(100_000 if number % 7 == 0 else 1 + number * 13 % 20_000, b".")


def test_kill_9_in_the_middle_of_many_writes_loses_no_file_a_close_returned_for(
        mounter, container, tmp_path):
    """The daemon is killed while a program writes files one after another and uploads
    run beside it: after the remount, every file whose close had returned is in the
    container, whole."""
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}], upload_batch_window=0.05)
    mount = mounter.mount(config)
    closed_log = tmp_path / "closed.txt"
    writer = subprocess.Popen([sys.executable, "-c", TAR_LIKE, str(mount.path("d")),
                               str(closed_log), str(WRITER_FILES)], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: closed_log.exists() and len(closed_log.read_text().split()) >= 150,
                 timeout=120, what="the writer to close 150 files")
        wait_for(lambda: any(True for _ in container.list_blobs()), timeout=60,
                 what="uploads to begin beside the writer")
        kill_daemon(mounter, mount)
        writer.wait(timeout=60)  # its next call fails on the dead mount
    except BaseException:
        writer.kill()
        mounter.cleanup()
        raise
    closed = closed_log.read_text().split()
    assert 150 <= len(closed) < WRITER_FILES  # killed in the middle
    with mounter.mounted(config) as mount:
        blobmount("sync", str(mount.mountpoint), check=True)
        held = blobs(container)
    missing = [name for name in closed if held.get(name) != tar_like_bytes(name)]
    assert missing == [], f"{len(missing)} of {len(closed)} closed files lost or cut"


def test_copies_downloaded_before_a_kill_download_again_and_a_clean_stop_keeps_them(
        mounter, container):
    """A downloaded copy is not fsynced on its own: the daemon syncs the cache's file
    system every little while and at a clean stop. After a kill -9 before such a sync,
    the next mount drops the copies it cannot vouch for and downloads them again;
    after a clean unmount it keeps them."""
    container.upload_blob("a.txt", b"alpha\n")
    container.upload_blob("b.txt", b"beta\n")
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            read_ahead_files=0, cache_sync_interval=HOLD_SYNC)
    mount = mounter.mount(config)
    try:
        assert mount.path("d/a.txt").read_bytes() == b"alpha\n"
        kill_daemon(mounter, mount)  # long before the first sync
    except BaseException:
        mounter.cleanup()
        raise
    with mounter.mounted(config) as mount:
        assert "dropped 1 downloaded copies never synced" in mount.log()
        assert mount.path("d/a.txt").read_bytes() == b"alpha\n"
        assert mount.path("d/b.txt").read_bytes() == b"beta\n"
        assert mount.status()["downloads"]["by_path"] == {"d/a.txt": 1, "d/b.txt": 1}
    with mounter.mounted(config) as mount:
        assert mount.path("d/a.txt").read_bytes() == b"alpha\n"
        assert mount.path("d/b.txt").read_bytes() == b"beta\n"
        assert mount.status()["downloads"]["total"] == 0  # kept across the clean stop
    assert mount.log().count("downloaded copies never synced") == 1


def test_unmount_finishes_pending_uploads_unless_told_not_to_wait(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}], upload_batch_window=HOLD_UPLOADS)
    mount = mounter.mount(config)
    try:
        first = write_files(mount.path("d"), 5, "drained")
        assert mount.status()["uploads"]["count"] == 5
        blobmount("unmount", str(mount.mountpoint), check=True)
        assert not pid_alive(mount.pid) and not is_mounted(mount.mountpoint)
        mounter.live.remove(mount)
        assert blobs(container) == first
    except BaseException:
        mounter.cleanup()
        raise
    mount = mounter.mount(config)
    try:
        second = write_files(mount.path("d"), 5, "left")
        blobmount("unmount", "--no-wait", str(mount.mountpoint), check=True)
        assert not pid_alive(mount.pid) and not is_mounted(mount.mountpoint)
        mounter.live.remove(mount)
        assert blobs(container) == first
    except BaseException:
        mounter.cleanup()
        raise
    with mounter.mounted(config) as mount:  # the next mount uploads what was left
        assert blobs(container) == {**first, **second}


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite of this test alone, keeping its blobs on disk across restarts."""
    with Azurite(location=tmp_path / "azurite") as service:
        yield service


@pytest.fixture
def own_container(own_azurite: Azurite) -> Iterator[ContainerClient]:
    client = BlobServiceClient.from_connection_string(own_azurite.connection_string)
    yield client.create_container("outage")
    client.close()


def test_async_writes_while_the_account_is_down_arrive_after(tmp_path, own_azurite,
                                                             own_container):
    mounter = Mounter(tmp_path, own_azurite)
    own_container.upload_blob("before.txt", b"there before\n")
    config = mounter.config([{"local": "d", "container": "outage", "upload": "async"}],
                            listing_ttl=3600)
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        assert os.listdir(root) == ["before.txt"]
        assert (root / "before.txt").read_bytes() == b"there before\n"
        port = own_azurite.port
        own_azurite.stop()
        expected = write_files(root, 10, "offline")
        with open(root / "before.txt", "ab") as writer:
            writer.write(b"and after\n")
        # Renames of files not uploaded yet need no network: an editor's save, a
        # download finished under its final name.
        (root / ".before.txt.swp").write_bytes(b"saved by the editor\n")
        os.rename(root / ".before.txt.swp", root / "before.txt")
        expected["before.txt"] = b"saved by the editor\n"
        (root / "draft.tmp").write_bytes(b"final words\n")
        os.rename(root / "draft.tmp", root / "final.txt")
        expected["final.txt"] = b"final words\n"
        with open(root / "fsynced.txt", "wb") as writer:  # durable once journaled
            writer.write(b"fsynced\n")
            writer.flush()
            os.fsync(writer.fileno())
        expected["fsynced.txt"] = b"fsynced\n"
        assert sorted(os.listdir(root)) == sorted(expected)
        for name, data in expected.items():
            assert (root / name).read_bytes() == data
        wait_for(lambda: mount.status()["uploads"]["failed"], timeout=60,
                 what="the failed uploads to show in status")
        uploads = mount.status()["uploads"]
        assert uploads["count"] == 13
        assert uploads["bytes"] == sum(len(data) for data in expected.values())
        assert uploads["oldest"] is not None
        assert all(failed["error"] and failed["attempts"] >= 1 for failed in uploads["failed"])
        own_azurite.start()
        assert own_azurite.port == port
        blobmount("sync", str(mount.mountpoint), check=True)
        assert blobs(own_container) == expected
        assert mount.status()["uploads"] == {"count": 0, "bytes": 0, "oldest": None,
                                             "failed": [], "orphaned": []}


def test_a_sync_write_while_the_account_is_down_fails_and_is_kept(tmp_path, own_azurite,
                                                                  own_container):
    mounter = Mounter(tmp_path, own_azurite)
    own_container.upload_blob("existing.txt", b"there before\n")
    config = mounter.config([{"local": "d", "container": "outage"}], listing_ttl=3600)
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        assert (root / "existing.txt").read_bytes() == b"there before\n"
        own_azurite.stop()
        expected = {"kept.txt": b"must not be lost\n",
                    "existing.txt": b"there before\nand after\n"}
        for name, mode, data in [("kept.txt", "wb", b"must not be lost\n"),
                                 ("existing.txt", "ab", b"and after\n")]:
            writer = open(root / name, mode)  # noqa: SIM115 (close() is what is tested)
            writer.write(data)
            with pytest.raises(OSError) as caught:
                writer.close()
            assert caught.value.errno == errno.EIO
            assert (root / name).read_bytes() == expected[name]
        failed = blobmount("sync", str(mount.mountpoint))
        assert failed.returncode == 1, failed.stderr
        assert "kept.txt" in failed.stderr and "existing.txt" in failed.stderr, failed.stderr
        own_azurite.start()
        blobmount("sync", str(mount.mountpoint), check=True)
        assert blobs(own_container) == expected


def test_pending_files_show_when_a_remount_cannot_upload_them(mounter, container):
    """What the journal holds shows in the mount, even while the account refuses it."""
    container.upload_blob("notes.txt", b"v1\n")
    name = container.container_name
    writer = mounter.config([{"local": "d", "container": name, "upload": "async"}],
                            upload_batch_window=HOLD_UPLOADS)
    mount = mounter.mount(writer)
    try:
        root = mount.path("d")
        os.mkdir(root / "sub")
        (root / "sub/deep.txt").write_bytes(b"deep\n")
        (root / "new.txt").write_bytes(b"brand new\n")
        with open(root / "notes.txt", "ab") as log:
            log.write(b"v2\n")
        kill_daemon(mounter, mount)
    except BaseException:
        mounter.cleanup()
        raise
    # `sub` exists only in the journal: its marker (async mkdir) and its file.
    token = generate_container_sas(
        AZURITE_ACCOUNT, name, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    reader = yaml.safe_load(writer.read_text())
    reader["accounts"]["az"] = {"account_name": AZURITE_ACCOUNT, "sas_token": token,
                                "endpoint": mounter.azurite.endpoint}
    reader["mounts"][0]["read_only"] = False
    reader_config = mounter.tmp_path / "reader.yaml"
    reader_config.write_text(yaml.safe_dump(reader))
    reader_config.chmod(0o600)
    mount = mounter.mount(reader_config)  # its start-up upload of the journal is refused
    try:
        root = mount.path("d")
        assert sorted(os.listdir(root)) == ["new.txt", "notes.txt", "sub"]
        assert (root / "notes.txt").read_bytes() == b"v1\nv2\n"
        assert (root / "notes.txt").stat().st_size == 6
        assert (root / "new.txt").read_bytes() == b"brand new\n"
        assert (root / "sub/deep.txt").read_bytes() == b"deep\n"
        uploads = mount.status()["uploads"]
        assert uploads["count"] == 4 and len(uploads["failed"]) == 4
        blobmount("unmount", "--no-wait", str(mount.mountpoint), check=True)
        mounter.live.remove(mount)
    except BaseException:
        mounter.cleanup()
        raise
    assert blobs(container) == {"notes.txt": b"v1\n"}
    with mounter.mounted(writer) as mount:
        assert blobs(container) == {"notes.txt": b"v1\nv2\n", "new.txt": b"brand new\n",
                                    "sub/deep.txt": b"deep\n", "sub": b""}  # and its marker
        assert mount.status()["uploads"]["count"] == 0
