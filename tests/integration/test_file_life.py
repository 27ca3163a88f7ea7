"""A file's life, with several programs and the container changing at the same time
(issue 13): no write a program was told had succeeded is lost, no stale byte is
served. The container, read through the SDK, is the truth.

Where a download must still be under way when the test acts, the mount reaches
Azurite through the fault proxy, which holds that one GET until the test lets it go:
no sleep, no race with the machine's load.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from blobmount.config import AZURITE_ACCOUNT

from .conftest import FUSERMOUNT, blobmount, pid_alive, wait_for
from .faultproxy import FaultProxy

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MODES = ["sync", "async"]
# The worker waits this long before a batch: an async file stays only here until
# `blobmount sync` (or the unmount) sends it.
HOLD_UPLOADS = 600
# A GET the proxy holds waits for the test, not for a timeout and a retry.
PATIENT = 300
# Seconds the proxy holds a download's GET while the test renames: a core whose rename
# waits for that download would otherwise wait for the proxy (see replace_while_held).
RENAME_GRACE = 5


@pytest.fixture
def proxy(azurite):
    with FaultProxy(azurite.port) as fault_proxy:
        yield fault_proxy


def entry(container, mode: str = "sync") -> dict:
    return {"local": "d", "container": container.container_name, "upload": mode}


def proxied(mounter, proxy: FaultProxy, container, mode: str, **settings) -> Path:
    """A config reaching Azurite through `proxy`, whose listings are trusted for the
    whole test and which fetches nothing unasked (the proxy's held GET is the test's)."""
    return mounter.config([entry(container, mode)], endpoint=proxy.endpoint(AZURITE_ACCOUNT),
                          remote_timeout=PATIENT, listing_ttl=3600, read_ahead_files=0,
                          **settings)


def sync(mount) -> None:
    blobmount("sync", str(mount.mountpoint), check=True)


def blob(container, name: str) -> bytes | None:
    """The blob's bytes; None if there is no such blob."""
    names = {item.name for item in container.list_blobs(name_starts_with=name)}
    return container.download_blob(name).readall() if name in names else None


def names(container) -> set[str]:
    return {item.name for item in container.list_blobs()}


def conflicts(container) -> set[str]:
    return {name for name in names(container) if ".conflict-" in name}


def summary(data: bytes | None) -> str:
    """Bytes as one short line (an assertion on megabytes prints these instead)."""
    if data is None:
        return "no blob"
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def described(data: bytes, old: bytes) -> str:
    """What a read returned, next to the version it should not be."""
    if data and old.startswith(data):
        return f"read {summary(data)}: the first bytes of the old version"
    return f"read {summary(data)}"


def errno_of(action) -> int:
    with pytest.raises(OSError) as caught:
        action()
    return caught.value.errno


# -- 1, 9: a rename onto a file whose download is under way -------------------------


def replace_while_held(proxy: FaultProxy, root: Path, data: bytes) -> None:
    """Write `data` to `new.part` and rename it onto `target` while the proxy holds
    the download of `target`, then let the download go on.

    Today's rename returns at once. One that waits for (rather than cancels) the
    download would wait for the proxy: the held GET is let go after RENAME_GRACE
    seconds all the same, and the rename then ends after the download.
    """
    failed: list[BaseException] = []

    def replace() -> None:
        try:
            (root / "new.part").write_bytes(data)
            os.rename(root / "new.part", root / "target")
        except BaseException as exc:
            failed.append(exc)

    renaming = threading.Thread(target=replace)
    renaming.start()
    try:
        renaming.join(timeout=RENAME_GRACE)
    finally:
        proxy.set_mode("forward")  # the held GET is let go (and asked again)
        renaming.join(timeout=120)
    assert not renaming.is_alive(), "the rename did not return"
    if failed:
        raise failed[0]


def test_a_rename_onto_a_file_being_read_keeps_the_renamed_bytes(mounter, container, proxy):
    """Issue 13, scenario 1: `mv new.part target` while a program reads `target`."""
    # Over 4 MiB: it comes by SDK ranges, readable as they arrive (two ranges here).
    old = os.urandom(5 * MiB)
    container.upload_blob("target", old)
    with mounter.mounted(proxied(mounter, proxy, container, "async",
                                 upload_batch_window=HOLD_UPLOADS)) as mount:
        root = mount.path("d")
        assert os.listdir(root) == ["target"]
        # The first range goes through, the second is held: the download stays under way.
        proxy.forward_next(1, method="GET")
        proxy.stall_next(1, method="GET")
        reader = open(root / "target", "rb")  # noqa: SIM115 (held open across the rename)
        try:
            first = reader.read(64 * 1024)
            assert first == old[:len(first)]
            wait_for(lambda: proxy.count("GET", "/target") >= 2,
                     what="the second range to be asked for")
            new = b"the new version, renamed into place\n"
            replace_while_held(proxy, root, new)
            # The reader keeps the file it opened (or is told it is gone): never the
            # new bytes mid-stream.
            with contextlib.suppress(OSError):
                rest = reader.read()
                assert old.startswith(first + rest)
        finally:
            proxy.set_mode("forward")
            reader.close()
        now = (root / "target").read_bytes()
        assert summary(now) == summary(new), described(now, old)
        assert sorted(os.listdir(root)) == ["target"]
        sync(mount)
        assert summary(blob(container, "target")) == summary(new)
        assert names(container) == {"target"}


def test_a_rename_onto_a_file_whose_download_is_in_flight(mounter, container, proxy):
    """Issue 13: "a rename onto a file whose download is in flight: the download later
    replaces the renamed bytes" (here a blob small enough for one GET, which open()
    waits for; async, where the rename is the mount's alone until the upload)."""
    old = os.urandom(MiB)
    container.upload_blob("target", old)
    with mounter.mounted(proxied(mounter, proxy, container, "async",
                                 upload_batch_window=HOLD_UPLOADS)) as mount:
        root = mount.path("d")
        assert os.listdir(root) == ["target"]
        proxy.stall_next(1, method="GET")
        read: list[bytes | OSError] = []

        def reader() -> None:
            try:
                read.append((root / "target").read_bytes())
            except OSError as exc:
                read.append(exc)

        opening = threading.Thread(target=reader)
        opening.start()
        try:
            wait_for(lambda: proxy.count("GET", "/target") >= 1,
                     what="the download to be asked for")
            new = b"renamed over a file being opened\n"
            replace_while_held(proxy, root, new)
        finally:
            proxy.set_mode("forward")
            opening.join(timeout=120)
        # The reader asked before the rename: either version, or an error, is fair.
        assert read and (isinstance(read[0], OSError) or read[0] in (old, new))
        now = (root / "target").read_bytes()
        assert summary(now) == summary(new), described(now, old)
        sync(mount)
        assert summary(blob(container, "target")) == summary(new)
        assert names(container) == {"target"}


# -- 2, 11: a file's version follows it through a rename of its folder --------------


@pytest.mark.parametrize("mode", MODES)
def test_a_file_written_again_after_its_folder_moved_is_no_conflict(mounter, container, mode):
    """Issue 13, scenario 2: mkdir d; echo a > d/f; sync; mv d d2; echo b > d2/f; sync."""
    with mounter.mounted(mounter.config([entry(container, mode)])) as mount:
        root = mount.path("d")
        os.mkdir(root / "d")
        (root / "d/f").write_bytes(b"a\n")
        sync(mount)
        assert blob(container, "d/f") == b"a\n"
        os.rename(root / "d", root / "d2")
        (root / "d2/f").write_bytes(b"b\n")
        sync(mount)
        assert conflicts(container) == set()
        assert blob(container, "d2/f") == b"b\n"
        assert not [name for name in names(container) if name == "d" or name.startswith("d/")]
        assert (root / "d2/f").read_bytes() == b"b\n"


def test_a_folder_rename_keeps_the_versions_of_its_files(mounter, container):
    """Issue 13: "a folder rename rewrites blob names under it but keeps their old ETags
    and cache paths". A small file (one GET) and a large one (an AzCopy job), both
    cached and clean, changed in place after their folder moved."""
    small, large = b"small file\n" * 100, os.urandom(2 * MiB)
    container.upload_blob("d/small.txt", small)
    container.upload_blob("d/large.bin", large)
    with mounter.mounted(mounter.config([entry(container)], sdk_download_max="1MiB")) as mount:
        root = mount.path("d")
        assert (root / "d/small.txt").read_bytes() == small
        assert summary((root / "d/large.bin").read_bytes()) == summary(large)
        os.rename(root / "d", root / "d2")
        for name in ("small.txt", "large.bin"):
            with open(root / "d2" / name, "r+b") as writer:
                writer.seek(5)
                writer.write(b"#")
        assert conflicts(container) == set()
        assert blob(container, "d2/small.txt") == small[:5] + b"#" + small[6:]
        assert summary(blob(container, "d2/large.bin")) == summary(
            large[:5] + b"#" + large[6:])
        assert names(container) - {"d2"} == {"d2/small.txt", "d2/large.bin"}


# -- 3: a write to a file whose blob vanished ----------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_appending_to_a_file_whose_blob_was_deleted_recreates_it(mounter, container, mode):
    """Issue 13, scenario 3 (another host cleans up while a log is being appended)."""
    container.upload_blob("app.log", b"line 1\n")
    with mounter.mounted(mounter.config([entry(container, mode)])) as mount:
        path = mount.path("d/app.log")
        with open(path, "ab") as log:
            log.write(b"line 2\n")
            log.flush()
            os.fsync(log.fileno())
            if mode == "sync":
                assert blob(container, "app.log") == b"line 1\nline 2\n"
            container.delete_blob("app.log")
            log.write(b"line 3\n")
        # close() succeeded: every byte was acknowledged.
        expected = b"line 1\nline 2\nline 3\n"
        sync(mount)
        assert blob(container, "app.log") == expected
        assert conflicts(container) == set()
        assert path.read_bytes() == expected


def test_a_conflict_found_while_the_file_stays_open_keeps_every_later_byte(mounter,
                                                                          container):
    """A conflict found by an fsync (sync mode) while the file stays open: the open file
    becomes the conflict copy, and what it writes later goes up there too; the other
    host's version stays."""
    container.upload_blob("report.txt", b"v0")
    with mounter.mounted(mounter.config([entry(container, "sync")])) as mount:
        with open(mount.path("d/report.txt"), "r+b") as report:
            report.write(b"mine 1")
            report.flush()
            os.fsync(report.fileno())
            assert blob(container, "report.txt") == b"mine 1"
            container.upload_blob("report.txt", b"theirs", overwrite=True)
            report.seek(0)
            report.write(b"mine 2")
            report.flush()
            os.fsync(report.fileno())  # finds the conflict: a copy beside it
            (copy,) = conflicts(container)
            assert blob(container, copy) == b"mine 2"
            report.write(b" and more")
        # close() succeeded: its bytes are in the copy, not over theirs.
        assert blob(container, copy) == b"mine 2 and more"
        assert blob(container, "report.txt") == b"theirs"
        assert conflicts(container) == {copy}
        wait_for(lambda: mount.path("d/report.txt").read_bytes() == b"theirs", timeout=30)
        assert mount.path(f"d/{copy}").read_bytes() == b"mine 2 and more"


@pytest.mark.parametrize("what", ["file", "folder"])
def test_an_open_file_whose_blob_was_deleted_can_be_renamed(mounter, container, what):
    """Another host deletes the blob of a file open here since its last upload; the
    file (or its folder) is renamed: the bytes are here, so they go up under the new
    name, though the container has nothing to copy."""
    container.upload_blob("old/f.txt", b"v0")
    with mounter.mounted(mounter.config([entry(container, "sync")])) as mount:
        with open(mount.path("d/old/f.txt"), "r+b") as f:
            f.write(b"v1")
            f.flush()
            os.fsync(f.fileno())
            assert blob(container, "old/f.txt") == b"v1"
            container.delete_blob("old/f.txt")
            if what == "file":
                os.rename(mount.path("d/old/f.txt"), mount.path("d/old/g.txt"))
                moved = "old/g.txt"
            else:
                os.rename(mount.path("d/old"), mount.path("d/new"))
                moved = "new/f.txt"
            assert blob(container, moved) == b"v1"
            f.write(b" v2")
        assert blob(container, moved) == b"v1 v2"
        assert blob(container, "old/f.txt") is None
        assert conflicts(container) == set()
        assert mount.path(f"d/{moved}").read_bytes() == b"v1 v2"


# -- 4, 8: unlinked while open ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_file_unlinked_while_open_works_until_its_last_close(mounter, container, mode):
    """Issue 13, scenario 4: the tmpfile() pattern (create, unlink, keep writing, read
    back, close)."""
    with mounter.mounted(mounter.config([entry(container, mode)])) as mount:
        root = mount.path("d")
        fd = os.open(root / "scratch", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.write(fd, b"before the unlink\n")
            os.unlink(root / "scratch")
            os.write(fd, b"after the unlink\n")
            assert os.pread(fd, 100, 0) == b"before the unlink\nafter the unlink\n"
            assert os.fstat(fd).st_size == 35
        finally:
            os.close(fd)  # must not fail
        # CPython's own: mkstemp, unlink, then buffered writes and reads through it.
        with tempfile.TemporaryFile(dir=root) as scratch:
            scratch.write(b"x" * 100_000)
            scratch.seek(0)
            assert scratch.read() == b"x" * 100_000
            scratch.write(b"appended")
            scratch.flush()
            os.fsync(scratch.fileno())
        with open(root / "appended", "ab") as log:  # O_APPEND asks the size at each write
            log.write(b"one\n")
            log.flush()
            os.unlink(root / "appended")
            log.write(b"two\n")
        sync(mount)
        assert os.listdir(root) == []
        assert names(container) == set()


@pytest.mark.parametrize("mode", MODES)
def test_a_descriptor_of_a_deleted_file_leaves_other_files_alone(mounter, container, mode):
    """Issue 13: inode numbers reused while the kernel still holds them, so "a
    descriptor of a deleted file can act on another file's record"."""
    with mounter.mounted(mounter.config([entry(container, mode)])) as mount:
        root = mount.path("d")
        fd = os.open(root / "old.txt", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, b"the old file\n")
        os.unlink(root / "old.txt")
        others = {f"new{n}.txt": f"new file {n}\n".encode() * (n + 1) for n in range(3)}
        for name, data in others.items():
            (root / name).write_bytes(data)
        sync(mount)
        assert {name: blob(container, name) for name in others} == others
        # What the old descriptor does must stay with the deleted file (each step is
        # tried, and its failure kept for the end: what it did to the others first;
        # close() releases the descriptor even when it fails).
        failures = []
        for step in (lambda: os.write(fd, b"written through the old descriptor\n" * 20),
                     lambda: os.ftruncate(fd, 500), lambda: os.fsync(fd),
                     lambda: os.close(fd)):
            try:
                step()
            except OSError as exc:
                failures.append(exc)
        sync(mount)
        assert {name: (root / name).stat().st_size for name in others} == {
            name: len(data) for name, data in others.items()}
        assert {name: (root / name).read_bytes() for name in others} == others
        assert names(container) == set(others)
        assert {name: blob(container, name) for name in others} == others
        assert failures == []


# -- 5: saves by rename ------------------------------------------------------------------


@pytest.mark.slow
def test_300_saves_by_rename_leave_no_temporary_blob(mounter, container):
    """Issue 13, scenario 5: async, the worker uploading while the saves go on."""
    with mounter.mounted(mounter.config([entry(container, "async")])) as mount:
        root = mount.path("d")
        for number in range(300):
            (root / "f.tmp").write_bytes(f"save {number}\n".encode())
            os.rename(root / "f.tmp", root / "f")
        sync(mount)
        left = names(container)
        assert "f.tmp" not in left, "a temporary blob is left behind"
        assert conflicts(container) == set(), "conflict copies, and nobody else wrote"
        assert left == {"f"}
        assert blob(container, "f") == b"save 299\n"
        assert os.listdir(root) == ["f"]


# -- 6: a folder removed while the kernel holds it ----------------------------------


@pytest.mark.parametrize("held", ["folder", "file in it"])
@pytest.mark.parametrize("mode", MODES)
def test_a_folder_made_after_one_removed_while_held_is_usable(mounter, container, mode, held):
    """Issue 13, scenario 6: mkdir a, hold it (or a file that was in it), rmdir a,
    mkdir b (a new name each round, so one sync checks them all), create b/f; 20
    times."""
    with mounter.mounted(mounter.config([entry(container, mode)])) as mount:
        root = mount.path("d")
        made = {}
        for number in range(20):
            os.mkdir(root / "a")
            if held == "folder":
                fd = os.open(root / "a", os.O_RDONLY | os.O_DIRECTORY)
            else:
                fd = os.open(root / "a/f", os.O_CREAT | os.O_WRONLY, 0o644)
                os.unlink(root / "a/f")
            try:
                os.rmdir(root / "a")
                os.mkdir(root / f"b{number}")
                made[f"b{number}/f"] = f"round {number}\n".encode()
                (root / f"b{number}/f").write_bytes(made[f"b{number}/f"])
                assert (root / f"b{number}/f").read_bytes() == made[f"b{number}/f"]
            finally:
                os.close(fd)
        sync(mount)
        assert sorted(os.listdir(root)) == sorted(f"b{number}" for number in range(20))
        assert {name: blob(container, name) for name in made} == made
        assert {name for name in names(container) if "/" in name} == set(made)


# -- 7: an upload that ends while the file is still open for writing ---------------


@pytest.mark.parametrize("trigger", ["fsync", "close of one of two"])
@pytest.mark.parametrize("mode", MODES)
def test_an_upload_while_the_file_is_still_written_marks_nothing_clean(
        mounter, container, mode, trigger):
    """Issue 13: "an upload that finishes while the file is still open for writing
    marks the copy clean"; a reader opening it next must not download over the
    writer's copy."""
    parts = [b"part one\n" * 100, b"part two\n" * 100, b"part three\n" * 100]
    with mounter.mounted(mounter.config([entry(container, mode)])) as mount:
        path = mount.path("d/grow.log")
        writer = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            if trigger == "fsync":
                os.write(writer, parts[0])
                os.fsync(writer)  # sync: uploaded now; async: journaled
            else:
                other = os.open(path, os.O_WRONLY)
                os.pwrite(other, parts[0], 0)
                os.close(other)  # uploads (sync) or journals (async) what it wrote
                os.lseek(writer, len(parts[0]), os.SEEK_SET)
            if mode == "async":
                sync(mount)  # the journaled upload goes up now, the file still open
            assert blob(container, "grow.log") == parts[0]
            os.write(writer, parts[1])
            # A reader opens it between two writes: it sees what was written.
            assert path.read_bytes() == parts[0] + parts[1]
            os.write(writer, parts[2])
        finally:
            os.close(writer)
        sync(mount)
        assert summary(blob(container, "grow.log")) == summary(b"".join(parts))
        assert path.read_bytes() == b"".join(parts)
        assert conflicts(container) == set()


# -- 10: mkdir over a blob made elsewhere ------------------------------------------


def test_mkdir_does_not_overwrite_a_blob_made_since_the_listing(mounter, container):
    """Issue 13: "`mkdir x` overwrites a blob `x` created elsewhere since the last
    listing". The blob is kept, and mkdir says the name is taken."""
    with mounter.mounted(mounter.config([entry(container)], listing_ttl=3600)) as mount:
        root = mount.path("d")
        assert os.listdir(root) == []
        container.upload_blob("x", b"made elsewhere\n")
        assert errno_of(lambda: os.mkdir(root / "x")) == errno.EEXIST
        assert blob(container, "x") == b"made elsewhere\n"
        props = container.get_blob_client("x").get_blob_properties()
        assert (props.metadata or {}).get("hdi_isfolder") is None
        assert names(container) == {"x"}


def marker_metadata(container, name: str) -> dict[str, str] | None:
    """The metadata of folder marker blob `name`; None if there is no marker."""
    with contextlib.suppress(Exception):
        props = container.get_blob_client(name).get_blob_properties()
        if props.size == 0 and (props.metadata or {}).get("hdi_isfolder") == "true":
            return dict(props.metadata)
    return None


def test_async_folders_are_made_here_and_their_markers_go_up_with_the_files(
        mounter, container):
    """With `upload: async`, a mkdir makes no request: the folder's marker is journaled
    and goes up with its files, with the mode set since; one removed or renamed before
    it went up leaves nothing behind (a rename moves the markers' rows, and puts none
    at the old names); a blob made elsewhere at its name is kept."""
    config = mounter.config([entry(container, "async")], upload_batch_window=HOLD_UPLOADS,
                            listing_ttl=3600)
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        os.mkdir(root / "kept")
        os.chmod(root / "kept", 0o750)
        (root / "kept/file.txt").write_bytes(b"inside\n")
        os.mkdir(root / "removed")
        os.rmdir(root / "removed")
        os.makedirs(root / "old/inner")
        os.rename(root / "old", root / "new")
        os.mkdir(root / "taken")
        container.upload_blob("taken", b"made elsewhere\n")
        assert (root / "kept").stat().st_mode & 0o777 == 0o750
        assert sorted(os.listdir(root)) == ["kept", "new", "taken"]
        # Only the rename's own marker went up (it moves in the container): the row of
        # the folder inside follows the rename, and nothing was put at the old names.
        assert names(container) == {"new", "taken"}
        blobmount("sync", str(mount.mountpoint), check=True)
        assert names(container) == {"kept", "kept/file.txt", "new", "new/inner", "taken"}
        kept = marker_metadata(container, "kept")
        assert kept is not None and int(kept["mode"], 8) & 0o7777 == 0o750
        assert marker_metadata(container, "new/inner") is not None
        assert blob(container, "taken") == b"made elsewhere\n"
        assert mount.status()["uploads"]["count"] == 0
        # The folders stay folders here through a listing of the container.
        assert sorted(os.listdir(root)) == ["kept", "new", "taken"]


# -- 12: a file open for writing when the daemon dies --------------------------------


def kill_daemon(mounter, mount) -> None:
    """kill -9 the daemon, and detach the dead mount it leaves."""
    os.kill(mount.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(mount.pid), timeout=10, what="the daemon to die")
    subprocess.run([FUSERMOUNT, "-u", "-z", str(mount.mountpoint)], check=True)
    mounter.live.remove(mount)


@pytest.mark.parametrize("mode", MODES)
def test_a_file_open_for_writing_at_a_kill_9_is_not_left_dirty(mounter, container, mode):
    """Issue 13: "a file open for writing at a crash, a kill -9 or a stop stays dirty
    forever". Never committed (no close, no fsync), its change is dropped at the next
    mount; one committed by close before the kill goes up."""
    container.upload_blob("open.txt", b"version 1\n")
    config = mounter.config([entry(container, mode)], upload_batch_window=HOLD_UPLOADS)
    mount = mounter.mount(config)
    try:
        root = mount.path("d")
        (root / "closed.txt").write_bytes(b"committed by close\n")
        fd = os.open(root / "open.txt", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"never committed\n")
            kill_daemon(mounter, mount)
        finally:
            with contextlib.suppress(OSError):  # the mount is dead
                os.close(fd)
    except BaseException:
        mounter.cleanup()
        raise
    container.upload_blob("open.txt", b"version 2, from elsewhere\n", overwrite=True)
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        sync(mount)
        assert (root / "open.txt").read_bytes() == b"version 2, from elsewhere\n"
        assert blob(container, "open.txt") == b"version 2, from elsewhere\n"
        assert blob(container, "closed.txt") == b"committed by close\n"
        assert names(container) == {"open.txt", "closed.txt"}
        assert mount.status()["uploads"]["count"] == 0


# -- and: a download by AzCopy is based on the version it fetched --------------------


def test_a_file_fetched_by_azcopy_is_based_on_the_version_fetched(mounter, container):
    """Issue 13: "AzCopy downloads record the ETag the listing showed, not that of the
    version fetched". The blob changed after the listing and before the download: the
    change made here is on the bytes fetched, so it is no conflict."""
    container.upload_blob("big.bin", os.urandom(2 * MiB))
    with mounter.mounted(mounter.config([entry(container)], sdk_download_max="1MiB",
                                        listing_ttl=3600, read_ahead_files=0)) as mount:
        root = mount.path("d")
        assert os.listdir(root) == ["big.bin"]
        changed = os.urandom(2 * MiB)
        container.upload_blob("big.bin", changed, overwrite=True)
        with open(root / "big.bin", "r+b") as writer:  # an AzCopy job fetches it
            fetched = writer.read(16)
            writer.seek(5)
            writer.write(b"#")
        assert fetched == changed[:16]
        assert conflicts(container) == set()
        assert summary(blob(container, "big.bin")) == summary(changed[:5] + b"#" + changed[6:])
