"""One bad moment never takes the mount down, and nothing it keeps is readable by
others: a private cache whatever the umask, a control socket that shrugs off garbage,
background work that fails alone, many open files, no AzCopy outliving its daemon."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from blobmount import control
from blobmount.config import AZURITE_ACCOUNT

from .conftest import blobmount, is_mounted, pid_alive, upload, wait_for
from .faultproxy import FaultProxy

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def modes_under(folder: Path) -> dict[str, int]:
    """Every folder and file under `folder` (itself included) and its permission bits."""
    found = {str(folder): stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        if not path.is_symlink():
            found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_the_cache_is_private_whatever_the_umask(mounter, container):
    upload(container, {"seen.txt": b"read through the mount\n"})
    cache = mounter.tmp_path / "cache"
    # What an older blobmount (or another umask) left: readable by every user.
    (cache / "d" / "blobs" / "ab").mkdir(parents=True)
    (cache / "d" / "blobs" / "ab" / "leftover").write_bytes(b"old copy")
    for path in [cache, cache / "d", cache / "d" / "blobs", cache / "d" / "blobs" / "ab"]:
        path.chmod(0o777)
    (cache / "d" / "blobs" / "ab" / "leftover").chmod(0o666)
    config = mounter.config([{"local": "d", "container": container.container_name}])
    old_umask = os.umask(0)
    try:
        mount = mounter.mount(config)
    finally:
        os.umask(old_umask)
    assert mount.path("d/seen.txt").read_bytes() == b"read through the mount\n"
    mount.path("d/written.txt").write_bytes(b"written through the mount\n")
    assert container.download_blob("written.txt").readall() == b"written through the mount\n"

    modes = modes_under(cache)
    assert any(path.endswith("blobmount.sqlite-wal") for path in modes), sorted(modes)
    assert len([p for p in modes if "/blobs/" in p and not p.endswith("leftover")]) >= 2
    loose = {path: oct(mode) for path, mode in modes.items()
             if mode != (0o700 if Path(path).is_dir() else 0o600)}
    assert not loose
    assert mount.log().count("was readable by other users") == 1
    # The log (made by `blobmount mount` before the daemon starts) names blobs too.
    assert stat.S_IMODE(mount.log_file.stat().st_mode) == 0o600


def test_strict_refuses_a_cache_folder_others_can_read(mounter, container):
    cache = mounter.tmp_path / "cache"
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    config = mounter.config([{"local": "d", "container": container.container_name}])
    (mounter.tmp_path / "mnt").mkdir()
    result = blobmount("mount", str(mounter.tmp_path / "mnt"), "--config", str(config),
                       "--strict")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "readable by other users" in result.stderr
    assert "refused: --strict" in result.stderr
    assert not is_mounted(mounter.tmp_path / "mnt")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755  # refused, not changed


def _ask(path: Path, payload: bytes, *, close_early: bool = False) -> bytes:
    """Send `payload` raw to the control socket; what came back before it closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        # The daemon may refuse a request before reading all of it.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def test_the_control_socket_survives_garbage(mounter, container):
    upload(container, {"still.txt": b"still served\n"})
    mount = mounter.mount(mounter.config([{"local": "d", "container": container.container_name}]))
    path = control.socket_path(mount.mountpoint)
    replies = {
        "not json": _ask(path, b"\x00\xffgarbage\n"),
        "nested arrays": _ask(path, b"[" * 200_000 + b"\n"),
        "nested objects": _ask(path, b'{"a":' * 200_000 + b"\n"),
        "not an object": _ask(path, b"[1, 2]\n"),
        "no op": _ask(path, b'{"path": "x"}\n'),
        "an op that is no string": _ask(path, b'{"op": ["status"]}\n'),
        "wrong arguments": _ask(path, b'{"op": "stats", "path": {"x": 1}}\n'),
        "half a request": _ask(path, b'{"op": "sta', close_early=True),
        "nothing": _ask(path, b"", close_early=True),
    }
    huge = _ask(path, b'{"op": "status", "pad": "' + b"x" * (4 << 20) + b'"}\n')
    for what, reply in replies.items():
        if what == "nothing":
            continue
        answer = json.loads(reply)
        assert answer["ok"] is False, what
    assert json.loads(huge) == {"ok": False, "error": "request too large"}
    # A peer that connects and says nothing holds no one else up.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(path))
        assert mount.status()["pid"] == mount.pid
        result = blobmount("status", str(mount.mountpoint))
        assert result.returncode == 0, result.stderr
    assert mount.path("d/still.txt").read_bytes() == b"still served\n"
    assert pid_alive(mount.pid) and is_mounted(mount.mountpoint)
    assert "RecursionError" not in mount.log()


def test_background_failures_fail_alone(mounter, container, monkeypatch):
    files = {f"walk/{i:02d}.txt": f"file {i}\n".encode() * 10 for i in range(24)}
    upload(container, files)
    # The daemon inherits this: two read-ahead fetches, the upload worker once and one
    # `stats` request each raise an exception nobody expects.
    monkeypatch.setenv("BLOBMOUNT_TEST_FAULTS", "read_ahead:2,upload_worker:1,control_stats:1")
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}])
    mount = mounter.mount(config)

    first = blobmount("stats", str(mount.path("d")))
    assert first.returncode == 1 and "internal error" in first.stderr
    assert blobmount("stats", str(mount.path("d"))).returncode == 0

    # A walk (00, 01) fetches 02 ahead, and the open of 02 fetches 03 and 04.
    for name in ("walk/00.txt", "walk/01.txt", "walk/02.txt"):
        assert mount.path(f"d/{name}").read_bytes() == files[name]
    wait_for(lambda: mount.log().count("fault injected at read_ahead") >= 2,
             what="read-ahead to meet its faults")
    for name, data in files.items():
        assert mount.path(f"d/{name}").read_bytes() == data

    mount.path("d/async.txt").write_bytes(b"goes up after a restart\n")
    wait_for(lambda: "the upload worker failed; starting it again" in mount.log(),
             what="the upload worker to fail")
    wait_for(lambda: any(b.name == "async.txt" for b in container.list_blobs()),
             what="the upload after the worker's restart")
    assert container.download_blob("async.txt").readall() == b"goes up after a restart\n"
    assert mount.status()["uploads"]["count"] == 0
    assert pid_alive(mount.pid) and is_mounted(mount.mountpoint)
    assert mount.log().count("fault injected at upload_worker") == 1


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 MiB tmpfs, unmounted again after the test (after its blobmount mount)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(folder)],
                   check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_cache_disk_makes_room_and_keeps_serving(small_disk, mounter, container):
    big = {f"big{i}.bin": os.urandom(20 * MiB) for i in range(4)}
    upload(container, {**big, "tiny.txt": b"ten bytes!", "held.txt": b"held open\n" * 1000},
           workers=4)
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            cache_dir=str(small_disk))
    mount = mounter.mount(config)
    with open(mount.path("d/held.txt"), "rb") as held:
        # 80 MiB through a 64 MiB cache with no cache_max_bytes: older copies make room.
        for name, data in big.items():
            assert mount.path(f"d/{name}").read_bytes() == data, name
        assert "is full: dropped" in mount.log()

        # A writer that really runs out of room is told so, and only it.
        with pytest.raises(OSError) as failed, open(mount.path("d/huge.bin"), "wb") as out:
            chunk = os.urandom(MiB)
            for _ in range(100):
                out.write(chunk)
                out.flush()
        assert failed.value.errno == errno.ENOSPC
        assert held.read() == b"held open\n" * 1000
    # Whatever the writer left, the uncached files still come in.
    assert mount.path("d/tiny.txt").read_bytes() == b"ten bytes!"
    assert mount.path("d/big0.bin").read_bytes() == big["big0.bin"]
    assert pid_alive(mount.pid) and is_mounted(mount.mountpoint)
    assert mount.status()["pid"] == mount.pid
    mounter.unmount(mount)


def test_five_thousand_files_open_at_once(mounter, container):
    # 500 blobs, each opened ten times: every open holds a descriptor of the daemon's.
    names = {f"many/{i:03d}.txt": f"{i}\n".encode() for i in range(500)}
    upload(container, names, workers=32)
    config = mounter.config([{"local": "d", "container": container.container_name}])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 5200:
        pytest.skip(f"the hard limit on open files is {hard}")
    # The daemon starts with the common soft limit of 1024, and raises it itself.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        mount = mounter.mount(config)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limits = Path(f"/proc/{mount.pid}/limits").read_text()
    assert f"Max open files            {hard}" in limits, limits
    handles = []
    try:
        for _ in range(10):
            handles += [(open(mount.path(f"d/{name}"), "rb"), data)  # noqa: SIM115
                        for name, data in names.items()]
        assert len(handles) == 5000
        assert len(os.listdir(f"/proc/{mount.pid}/fd")) > 5000
        assert all(handle.read() == data for handle, data in handles)
    finally:
        for handle, _ in handles:
            handle.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert mount.status()["pid"] == mount.pid


def _children(pid: int, name: str) -> list[int]:
    """The PIDs of `pid`'s children whose command starts with `name` (the kernel keeps
    15 bytes of it: `azcopy_linux_am`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat_line = (entry / "stat").read_text()
                command, rest = stat_line.split("(", 1)[1].rsplit(")", 1)
                if command.startswith(name) and int(rest.split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def test_no_azcopy_outlives_a_killed_daemon(mounter, container, azurite):
    upload(container, {f"batch/{i:02d}.bin": os.urandom(4 * MiB) for i in range(20)},
           workers=8)
    with FaultProxy(azurite.port) as proxy:
        config = mounter.config([{"local": "d", "container": container.container_name}],
                                endpoint=proxy.endpoint(AZURITE_ACCOUNT))
        mount = mounter.mount(config)
        prefetch = subprocess.Popen([sys.executable, "-m", "blobmount", "prefetch", "-q",
                                     str(mount.path("d/batch"))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        azcopy: list[int] = []
        try:
            azcopy = wait_for(lambda: _children(mount.pid, "azcopy"),
                              what="the prefetch's AzCopy job")
            proxy.set_mode("stall")  # the job can only wait now
            assert all(pid_alive(pid) for pid in azcopy)
            os.kill(mount.pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(mount.pid), what="the daemon to die")
            wait_for(lambda: not any(pid_alive(pid) for pid in azcopy), timeout=10,
                     what="AzCopy to die with the daemon")
        finally:
            proxy.set_mode("forward")
            for pid in azcopy:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            prefetch.kill()
            prefetch.wait()


def test_an_upload_whose_entry_left_the_config_is_reported_not_retried(mounter, container):
    name = container.container_name
    before = mounter.config([{"local": "d", "container": name, "remote": "keep"},
                             {"local": "gone", "container": name, "remote": "gone",
                              "upload": "async"}], "before.yaml", upload_batch_window=600)
    mount = mounter.mount(before)
    mount.path("gone/left.txt").write_bytes(b"journaled, never uploaded\n")
    assert mount.status()["uploads"]["count"] == 1
    blobmount("unmount", str(mount.mountpoint), "--no-wait", check=True)
    wait_for(lambda: not pid_alive(mount.pid), what="the daemon to exit")
    mounter.live.remove(mount)

    after = mounter.config([{"local": "d", "container": name, "remote": "keep"}], "after.yaml")
    mount = mounter.mount(after)
    uploads = mount.status()["uploads"]
    assert uploads["failed"] == []
    [orphan] = uploads["orphaned"]
    assert orphan["blob"].endswith(f"/{name}/gone/left.txt")
    assert "no mount entry of this config" in orphan["error"]
    text = blobmount("status", str(mount.mountpoint))
    assert "upload not tried: no mount entry" in text.stdout
    synced = blobmount("sync", str(mount.mountpoint))
    assert synced.returncode == 1 and "gone/left.txt" in synced.stderr
    assert "no mount entry of this config" in synced.stderr
    assert "upload of gone/left.txt failed" not in mount.log()
    assert [blob.name for blob in container.list_blobs()] == []
    mounter.unmount(mount)
