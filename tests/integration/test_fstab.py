"""mount(8) mounts a config as /etc/fstab would: `mount -t fuse.blobmount CONFIG MNT -o ...`.

mount(8) runs /sbin/mount.fuse.blobmount (which scripts/install links to this
checkout's blobmount) with fstab's options; fuse3's mount.fuse runs `blobmount CONFIG
MNT -o ...` for fstab's `blobmount#CONFIG ... fuse` form. Both are tried for real.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import blobmount, is_mounted, pid_alive, upload, wait_for
from .procs import kill_everything

HELPER = Path("/sbin/mount.fuse.blobmount")
# What an fstab line for "mount on first access" carries; mount(8) passes some of it on.
FSTAB_OPTIONS = "defaults,_netdev,noauto,x-systemd.automount,x-systemd.idle-timeout=600"


def _helper_is_ours() -> bool:
    """The helper and `blobmount` on mount.fuse's PATH run this checkout's blobmount."""
    ours = Path(shutil.which("blobmount", path=os.defpath + ":/usr/local/bin") or "")
    venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "blobmount"
    return (HELPER.exists() and HELPER.resolve() == venv.resolve()
            and ours.exists() and ours.resolve() == venv.resolve())


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) of a FUSE helper needs root here"),
    pytest.mark.skipif(not _helper_is_ours(),
                       reason=f"{HELPER} does not lead to this checkout: run scripts/install"),
]


def daemon_pid(mountpoint: Path) -> int:
    return json.loads(blobmount("status", str(mountpoint), "--json", check=True).stdout)["pid"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_mount_t_fuse_blobmount_mounts_and_umount_unmounts(mounter, container, tmp_path):
    upload(container, {"data/hello.txt": b"hello from fstab\n"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log = tmp_path / "helper.log"
    try:
        result = run("mount", "-t", "fuse.blobmount", str(config), str(mountpoint), "-o",
                     f"{FSTAB_OPTIONS},allow_other,noexec,blobmount.log={log}")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "" and result.stderr == ""  # quiet, as mount(8) is
        assert is_mounted(mountpoint)
        line = next(line for line in Path("/proc/self/mounts").read_text().splitlines()
                    if line.split(" ")[1] == str(mountpoint))
        fstype, options = line.split(" ")[2], line.split(" ")[3].split(",")
        assert fstype == "fuse.blobmount"
        assert {"allow_other", "noexec", "nosuid", "nodev"} <= set(options)
        pid = daemon_pid(mountpoint)
        assert (mountpoint / "d/data/hello.txt").read_bytes() == b"hello from fstab\n"
        (mountpoint / "d/data/new.txt").write_bytes(b"written through fstab's mount")
        assert container.download_blob("data/new.txt").readall() == (
            b"written through fstab's mount")
        assert log.exists()

        result = run("umount", str(mountpoint))
        assert result.returncode == 0, result.stderr
        assert not is_mounted(mountpoint)
        wait_for(lambda: not pid_alive(pid), timeout=30, what="the daemon to exit")
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise


def test_fuse_hash_form_through_mount_fuse(mounter, container, tmp_path):
    """fstab: `blobmount#CONFIG MNT fuse ro 0 0`: mount.fuse3 runs `blobmount CONFIG MNT`."""
    upload(container, {"f.txt": b"read-only through mount.fuse"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        result = run("mount", "-t", "fuse", f"blobmount#{config}", str(mountpoint), "-o",
                     f"ro,_netdev,blobmount.log={tmp_path / 'helper.log'}")
        assert result.returncode == 0, result.stderr
        pid = daemon_pid(mountpoint)
        assert (mountpoint / "d/f.txt").read_bytes() == b"read-only through mount.fuse"
        with pytest.raises(OSError) as refused:
            (mountpoint / "d/new.txt").write_bytes(b"no")
        assert refused.value.errno == errno.EROFS
        result = blobmount("unmount", str(mountpoint), timeout=60)
        assert result.returncode == 0, result.stderr
        assert not is_mounted(mountpoint) and not pid_alive(pid)
        assert [blob.name for blob in container.list_blobs()] == ["f.txt"]
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise


def test_helper_failures_are_one_line_and_mount_fails(mounter, container, tmp_path):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        missing = run("mount", "-t", "fuse.blobmount", str(tmp_path / "absent.yaml"),
                      str(mountpoint))
        assert missing.returncode != 0
        assert f"blobmount: {tmp_path / 'absent.yaml'}: no such file" in missing.stderr
        unknown = run("mount", "-t", "fuse.blobmount", str(config), str(mountpoint),
                      "-o", "uid=1000")
        assert unknown.returncode != 0
        assert "unknown mount option 'uid=1000'" in unknown.stderr
        assert "Traceback" not in missing.stderr + unknown.stderr
        assert not is_mounted(mountpoint)
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise
