"""mount(8) mounts a config as /etc/fstab would: `mount -t fuse.blobmount CONFIG MNT -o ...`.

mount(8) runs /sbin/mount.fuse.blobmount SOURCE MNT -o OPTIONS (scripts/install links
it to blobmount), and fuse3's mount.fuse runs `blobmount SOURCE MNT -o OPTIONS` for
fstab's `blobmount#SOURCE ... fuse` form. This checkout's blobmount is called both ways
exactly as they call it, then `umount` ends the mount. Real `mount` runs go through the
system-wide links, which lead to the system-wide install of whichever checkout ran
scripts/install last: those tests run only when that is this one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import blobmount, is_mounted, pid_alive, upload, wait_for
from .procs import kill_everything
from .system_install import HELPER, not_this_checkout

OURS = Path(sys.executable).parent / "blobmount"  # this checkout's program
# What an fstab line for "mount on first access" carries; mount(8) passes some of it on.
FSTAB_OPTIONS = "defaults,_netdev,noauto,x-systemd.automount,x-systemd.idle-timeout=600"


def _system_links_are_ours() -> bool:
    """The helper and the `blobmount` mount.fuse finds run this checkout's blobmount."""
    program = Path(shutil.which("blobmount", path="/usr/local/bin:/usr/bin:/bin") or "")
    return (HELPER.exists() and program.exists() and HELPER.resolve() == program.resolve()
            and not_this_checkout(program) is None)


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) and umount(8) of FUSE need root here"),
]
real_mount = pytest.mark.skipif(
    not _system_links_are_ours(),
    reason=f"{HELPER} and /usr/local/bin/blobmount lead to another checkout"
           " (run scripts/install here to test real mount(8) calls)")


def daemon_pid(mountpoint: Path) -> int:
    return json.loads(blobmount("status", str(mountpoint), "--json", check=True).stdout)["pid"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_helper_called_as_mount_8_calls_it(mounter, container, tmp_path):
    """/sbin/mount.fuse.blobmount CONFIG MNT -o OPTIONS: the arguments mount(8) gave
    its helper for an fstab line with the options below (seen on Debian 12)."""
    upload(container, {"a.txt": b"through the helper"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    helper = tmp_path / "mount.fuse.blobmount"
    helper.symlink_to(OURS)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        result = run(str(helper), str(config), str(mountpoint), "-o",
                     f"rw,nosuid,allow_other,_netdev,blobmount.log={tmp_path / 'h.log'}")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        pid = daemon_pid(mountpoint)
        assert (mountpoint / "d/a.txt").read_bytes() == b"through the helper"
        assert run("umount", str(mountpoint)).returncode == 0
        wait_for(lambda: not pid_alive(pid), timeout=30, what="the daemon to exit")
        failed = run(str(helper), str(tmp_path / "absent.yaml"), str(mountpoint))
        assert failed.returncode == 32 and failed.stderr.count("\n") == 1
        wrong = run(str(helper), str(config))
        assert wrong.returncode == 1 and "usage" in wrong.stderr
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise


def test_program_called_as_mount_fuse_calls_it(mounter, container, tmp_path):
    """`blobmount CONFIG MNT -o OPTIONS`: how mount.fuse3 runs a file system program for
    fstab's `blobmount#CONFIG MNT fuse ...` (it adds dev,suid)."""
    upload(container, {"a.txt": b"as mount.fuse runs it"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        result = run(str(OURS), str(config), str(mountpoint), "-o",
                     f"ro,dev,suid,blobmount.log={tmp_path / 'h.log'}")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        pid = daemon_pid(mountpoint)
        assert (mountpoint / "d/a.txt").read_bytes() == b"as mount.fuse runs it"
        with pytest.raises(OSError) as refused:
            (mountpoint / "d/b.txt").write_bytes(b"no")
        assert refused.value.errno == errno.EROFS
        assert run("umount", str(mountpoint)).returncode == 0
        wait_for(lambda: not pid_alive(pid), timeout=30, what="the daemon to exit")
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise


@real_mount
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


@real_mount
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


@real_mount
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
                      "-o", "max_read=65536")
        assert unknown.returncode != 0
        assert "unknown mount option 'max_read=65536'" in unknown.stderr
        assert "Traceback" not in missing.stderr + unknown.stderr
        assert not is_mounted(mountpoint)
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise
