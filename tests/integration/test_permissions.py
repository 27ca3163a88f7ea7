"""Who may use a mount: the owner and mode the files show (uid, gid, umask from the
config or -o), the kernel's rule that only the mounting user gets in without
allow_other, and default_permissions checking the shown mode for everybody else."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may traverse, for mount points: pytest's tmp_path is 0700.

    Ask for it before `mounter`, so that it is removed after every mount is gone.
    """
    folder = Path(tempfile.mkdtemp(prefix="blobmount-perms-"))
    folder.chmod(0o755)
    yield folder
    # rmdir, never rmtree: through a mount that outlived the test, rmtree deletes blobs.
    for path in [*folder.iterdir(), folder]:
        with contextlib.suppress(OSError):
            path.rmdir()


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", *command], capture_output=True, timeout=30)


def refused(result: subprocess.CompletedProcess) -> bool:
    return result.returncode != 0 and b"Permission denied" in result.stderr


def mode_and_owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def test_owner_and_mode_come_from_the_settings_and_o_wins(mounter, container):
    container.upload_blob("sub/f.txt", b"data\n")
    name = container.container_name
    # The config says one thing, -o another: -o wins, as it does for rclone and blobfuse2.
    # `permissions: fixed`: every file shows the settings (test_posix.py: modes kept).
    config = mounter.config([{"local": "rw", "container": name},
                             {"local": "ro", "container": name, "read_only": True}],
                            uid=1, gid=1, umask="077", permissions="fixed")
    with mounter.mounted(config, None, "-o", "uid=1234,gid=2345,umask=027") as mount:
        assert mode_and_owner(mount.path("rw/sub/f.txt")) == (0o640, 1234, 2345)
        assert mode_and_owner(mount.path("rw/sub")) == (0o750, 1234, 2345)
        assert mode_and_owner(mount.path("rw")) == (0o750, 1234, 2345)
        assert mode_and_owner(mount.path("ro/sub/f.txt")) == (0o440, 1234, 2345)
        assert mode_and_owner(mount.path("ro/sub")) == (0o550, 1234, 2345)
        assert mode_and_owner(mount.mountpoint) == (0o550, 1234, 2345)
        # New files and folders show the same, whatever mode their creator asked for.
        fd = os.open(mount.path("rw/new.txt"), os.O_CREAT | os.O_WRONLY, 0o777)
        os.write(fd, b"new\n")
        os.close(fd)
        os.mkdir(mount.path("rw/made"), 0o700)
        assert mode_and_owner(mount.path("rw/new.txt")) == (0o640, 1234, 2345)
        assert mode_and_owner(mount.path("rw/made")) == (0o750, 1234, 2345)
        # Fixed: chmod and chown are accepted and not kept; the blob gains nothing.
        metadata = container.get_blob_client("sub/f.txt").get_blob_properties().metadata
        os.chmod(mount.path("rw/sub/f.txt"), 0o600)
        os.chown(mount.path("rw/sub/f.txt"), 0, 0)
        assert mode_and_owner(mount.path("rw/sub/f.txt")) == (0o640, 1234, 2345)
        assert container.get_blob_client("sub/f.txt").get_blob_properties().metadata == (
            metadata)
        assert container.download_blob("new.txt").readall() == b"new\n"


@as_root
def test_without_allow_other_only_the_mounting_user_gets_in(open_folder, mounter, container):
    container.upload_blob("f.txt", b"private\n")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = open_folder / "mnt"
    mountpoint.mkdir()
    # Before the mount, nobody reaches the mount point: what refuses later is FUSE.
    assert as_nobody("stat", str(mountpoint)).returncode == 0
    with mounter.mounted(config, mountpoint) as mount:
        assert mode_and_owner(mount.path("d/f.txt"))[0] == 0o644  # readable by all, yet:
        assert refused(as_nobody("stat", str(mountpoint)))
        assert refused(as_nobody("cat", str(mount.path("d/f.txt"))))
        assert mount.path("d/f.txt").read_bytes() == b"private\n"
        # The kernel refused nobody before anything reached the daemon.
        assert mount.status()["downloads"]["by_path"] == {"d/f.txt": 1}


@as_root
def test_allow_other_lets_others_in_as_far_as_the_shown_mode_allows(open_folder, mounter,
                                                                    container):
    data = b"shared numbers\n"
    container.upload_blob("f.txt", data)
    name = container.container_name
    mountpoint = open_folder / "mnt"
    mountpoint.mkdir()
    options = ("-o", "allow_other,default_permissions")

    readable = mounter.config([{"local": "d", "container": name}], name="readable.yaml")
    with mounter.mounted(readable, mountpoint, *options) as mount:
        assert as_nobody("cat", str(mount.path("d/f.txt"))).stdout == data
        # 0644 and owned by root: nobody reads and cannot write.
        assert refused(as_nobody("sh", "-c", 'echo changed > "$1"', "sh",
                                 str(mount.path("d/f.txt"))))
        assert refused(as_nobody("mkdir", str(mount.path("d/new"))))
        assert container.download_blob("f.txt").readall() == data
        assert [blob.name for blob in container.list_blobs()] == ["f.txt"]

    private = mounter.config([{"local": "d", "container": name}], name="private.yaml",
                             umask="077")
    with mounter.mounted(private, mountpoint, *options) as mount:
        assert mode_and_owner(mount.path("d/f.txt"))[0] == 0o600
        assert as_nobody("stat", str(mountpoint)).returncode == 0  # allow_other: in,
        assert refused(as_nobody("stat", str(mount.path("d"))))  # but the mode says no
        assert refused(as_nobody("cat", str(mount.path("d/f.txt"))))
        assert mount.path("d/f.txt").read_bytes() == data
