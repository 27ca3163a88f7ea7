"""The systemd unit's commands, run as systemd runs them.

PID 1 here is not systemd, so the test plays its part: it binds the notify socket,
starts the unit's ExecStart= (paths moved under tmp_path) with $NOTIFY_SOCKET and
$CACHE_DIRECTORY set, waits for READY=1, then runs ExecStop= and expects STOPPING=1,
the pending upload in the container and the daemon gone.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import is_mounted, pid_alive, wait_for
from .procs import kill_everything

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "blobmount@.service"


def unit_command(key: str, instance: str, root: Path) -> list[str]:
    """A unit's Exec line for `instance`, its system paths moved under `root`, run with
    this Python's blobmount rather than /usr/local/bin's."""
    line = next(line for line in UNIT.read_text().splitlines() if line.startswith(f"{key}="))
    command = line.split("=", 1)[1].lstrip("-").replace("%i", instance)
    for system in ("/etc/blobmount/", "/mnt/", "/var/log/blobmount/"):
        command = command.replace(system, f"{root}{system}")
    argv = shlex.split(command)
    assert argv[0] == "/usr/local/bin/blobmount"
    return [sys.executable, "-m", "blobmount", *argv[1:]]


def messages(sock: socket.socket, until: str, timeout: float = 60) -> list[str]:
    """Datagrams received until one holds the field `until`."""
    sock.settimeout(timeout)
    received = []
    while not any(until in message.splitlines() for message in received):
        received.append(sock.recv(4096).decode())
    return received


def test_unit_commands_notify_ready_and_drain_at_stop(mounter, container, tmp_path):
    instance = "datasets"
    (tmp_path / "etc/blobmount").mkdir(parents=True)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "var/log/blobmount").mkdir(parents=True)
    config = mounter.config(
        [{"local": "d", "container": container.container_name, "upload": "async"}],
        # Held back, so the file is still pending when the service is told to stop.
        upload_batch_window=60)
    document = config.read_text()
    config.unlink()
    config_file = tmp_path / "etc/blobmount" / f"{instance}.yaml"
    # The unit gives the cache folder (CacheDirectory=): the config names none.
    config_file.write_text("\n".join(line for line in document.splitlines()
                                     if not line.startswith("cache_dir:")) + "\n")
    config_file.chmod(0o600)
    mountpoint = tmp_path / "mnt" / instance
    mountpoint.mkdir()

    name = f"blobmount-test-{uuid.uuid4().hex}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    env = {**os.environ, "NOTIFY_SOCKET": f"@{name}",
           "CACHE_DIRECTORY": str(tmp_path / "var/cache/blobmount" / instance)}
    service = subprocess.Popen(unit_command("ExecStart", instance, tmp_path), env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        ready = messages(notify, "READY=1")
        assert is_mounted(mountpoint)  # READY=1 comes once the mount is live
        assert f"STATUS=mounted 1 entry on {mountpoint}" in ready[-1].splitlines()
        assert (tmp_path / "var/cache/blobmount" / instance / "blobmount.sqlite").exists()

        (mountpoint / "d/late.txt").write_bytes(b"uploaded at stop")
        assert [blob.name for blob in container.list_blobs()] == []  # still pending

        stop = subprocess.run(unit_command("ExecStop", instance, tmp_path), env=env,
                              capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        # ExecStop returns once the daemon is gone, with the upload done.
        assert service.wait(timeout=5) == 0
        assert container.download_blob("late.txt").readall() == b"uploaded at stop"
        stopping = messages(notify, "STOPPING=1", timeout=5)
        assert f"STATUS=unmounted {mountpoint}; uploading 1 pending files" in (
            stopping[-1].splitlines())
        assert not is_mounted(mountpoint)
        log = (tmp_path / "var/log/blobmount" / f"{instance}.log").read_text()
        assert "Traceback" not in log
    except BaseException:
        service.kill()
        kill_everything(tmp_path, mountpoint)
        raise
    finally:
        notify.close()
        if service.poll() is None:
            service.kill()
        service.wait()
    assert not pid_alive(service.pid)


def test_stop_post_clears_a_dead_mount_for_the_restart(mounter, container, tmp_path):
    """After a crash (kill -9) the unit's ExecStopPost= detaches the dead mount, so
    Restart=on-failure can mount again."""
    instance = "crashy"
    root = tmp_path
    (root / "etc/blobmount").mkdir(parents=True)
    (root / "var/log/blobmount").mkdir(parents=True)
    mountpoint = root / "mnt" / instance
    mountpoint.mkdir(parents=True)
    config = mounter.config([{"local": "d", "container": container.container_name}])
    config.rename(root / "etc/blobmount" / f"{instance}.yaml")
    start = unit_command("ExecStart", instance, root)
    service = subprocess.Popen(start, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: is_mounted(mountpoint), timeout=60, what="the mount")
        service.kill()
        service.wait()
        assert is_mounted(mountpoint)  # dead, but still in the way
        line = next(line for line in UNIT.read_text().splitlines()
                    if line.startswith("ExecStopPost="))
        post = shlex.split(line.split("=", 1)[1].lstrip("-").replace("%i", instance)
                           .replace("/mnt/", f"{root}/mnt/"))
        subprocess.run(post, check=True, timeout=30)
        assert not is_mounted(mountpoint)
        restarted = subprocess.Popen(start, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: is_mounted(mountpoint) or restarted.poll() is not None,
                     timeout=60, what="the restarted mount")
            assert restarted.poll() is None and os.listdir(mountpoint) == ["d"]
        finally:
            restarted.terminate()
            assert restarted.wait(timeout=30) == 0
    except BaseException:
        kill_everything(root, mountpoint)
        raise
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
