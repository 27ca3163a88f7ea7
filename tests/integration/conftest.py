"""The integration harness: a real Azurite, real FUSE mounts, the real CLI.

Every mount is made by running `blobmount mount` as a user would, and taken down by
`fusermount3 -u` (or the test's own way), then the daemon is waited for by PID. A
mount that a failing test leaves behind is detached lazily and its daemon killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

from blobmount import control
from blobmount.azurite import Azurite
from blobmount.commands import UNMOUNT_TIMEOUT
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

pytestmark = pytest.mark.integration

FUSERMOUNT = "fusermount3"


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition` until it returns a true value; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def holders(mountpoint: Path) -> list[str]:
    """The processes whose folder or open files are under `mountpoint`: what keeps
    it busy."""
    inside = str(mountpoint).rstrip("/") + "/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            links = [proc / "cwd", *(proc / "fd").iterdir()]
            for link in links:
                with contextlib.suppress(OSError):
                    target = os.readlink(link)
                    if target == str(mountpoint) or target.startswith(inside):
                        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                        found.append(f"pid {proc.name} ({command.decode(errors='replace')[:80]}):"
                                     f" {link.name} {target}")
    return found


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split(" ")[1] == str(path) for line in mounts)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"
    return False


def blobmount(*args: str, env: dict | None = None, timeout: float = 120.0,
              check: bool = False) -> subprocess.CompletedProcess:
    """Run the blobmount CLI in a child process, as a user would."""
    result = subprocess.run([sys.executable, "-m", "blobmount", *args], capture_output=True,
                            text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"blobmount {' '.join(args)} failed:\n{result.stderr}")
    return result


# An Azurite per test module, not per session: on a loaded machine, a long-lived
# in-memory Azurite that had taken the whole suite's traffic was seen to stop answering
# (its JavaScript busy in a loop, a CPU at half), and every test after it hung.
@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as service:
        yield service


@pytest.fixture(scope="module")
def service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    # Bounded, so an Azurite that stops answering fails a test instead of hanging the suite.
    client = BlobServiceClient.from_connection_string(
        azurite.connection_string, connection_timeout=20, read_timeout=120)
    yield client
    client.close()


@pytest.fixture
def container(service: BlobServiceClient) -> Iterator[ContainerClient]:
    client = service.create_container(f"t{uuid.uuid4().hex[:20]}")
    yield client
    client.delete_container()


@dataclass
class Mount:
    """A live mount made through the CLI."""

    mountpoint: Path
    config: Path
    log_file: Path
    pid: int

    def status(self) -> dict:
        """What `blobmount status --json` prints (the daemon's reply to "status"), asked
        over the control socket from here: tests poll it, and a CLI call is a Python
        start each time."""
        return control.request(os.path.abspath(self.mountpoint), "status")

    def path(self, relative: str) -> Path:
        return self.mountpoint / relative

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


class Mounter:
    """Makes mounts of a config, and makes sure none outlives the test."""

    def __init__(self, tmp_path: Path, azurite: Azurite) -> None:
        self.tmp_path = tmp_path
        self.azurite = azurite
        self.live: list[Mount] = []

    def config(self, mounts: list[dict], name: str = "config.yaml", *,
               endpoint: str | None = None, **top) -> Path:
        """Write a native config for the test's Azurite (or `endpoint`, a proxy of it);
        `mounts` use account 'az'."""
        document = {
            "cache_dir": str(self.tmp_path / "cache"),
            "accounts": {"az": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                                "endpoint": endpoint or self.azurite.endpoint}},
            "mounts": [{"account": "az", **entry} for entry in mounts],
            **top,
        }
        path = self.tmp_path / name
        path.write_text(yaml.safe_dump(document))
        path.chmod(0o600)
        return path

    def mount(self, config: Path, mountpoint: Path | None = None, *extra: str) -> Mount:
        mountpoint = mountpoint or self.tmp_path / "mnt"
        mountpoint.mkdir(exist_ok=True)
        log_file = self.tmp_path / "blobmount.log"
        # `--json` says the daemon's pid: no `status` call (a Python start) per mount.
        started = blobmount("mount", str(mountpoint), "--config", str(config), "--log-file",
                            str(log_file), "-v", "--json", *extra, check=True)
        assert is_mounted(mountpoint), "blobmount mount exited 0 but nothing is mounted"
        pid = json.loads(started.stdout)["pid"]
        mount = Mount(mountpoint, config, log_file, pid)
        self.live.append(mount)
        return mount

    @contextlib.contextmanager
    def mounted(self, config: Path, mountpoint: Path | None = None,
                *extra: str) -> Iterator[Mount]:
        """A mount for the `with` block, unmounted cleanly (and checked) at its end, or
        taken down by force if the block fails."""
        mount = self.mount(config, mountpoint, *extra)
        try:
            yield mount
        except BaseException:
            self.cleanup()
            raise
        self.unmount(mount)

    def unmount(self, mount: Mount) -> None:
        # Busy only while some process is inside the mount: on a loaded machine with
        # suites side by side that was once seen to outlast the test's own last call
        # (cause not found), so busy is asked again for a while, then reported with
        # the processes that hold the mount.
        def unmounted() -> bool:
            return subprocess.run([FUSERMOUNT, "-u", str(mount.mountpoint)],
                                  capture_output=True).returncode == 0
        try:
            wait_for(unmounted, timeout=10, interval=0.2, what=f"{mount.mountpoint} to unmount")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; inside it: {holders(mount.mountpoint)}") from None
        # `blobmount unmount` waits UNMOUNT_TIMEOUT for the daemon's last uploads and
        # exit; a loaded machine (two suites and an apt install beside) took over 30 s.
        try:
            wait_for(lambda: not pid_alive(mount.pid), timeout=2 * UNMOUNT_TIMEOUT,
                     what="the daemon to exit")
        except AssertionError as exc:
            tail = "\n".join(mount.log().splitlines()[-15:])
            raise AssertionError(f"{exc}; the end of its log:\n{tail}") from None
        self.live.remove(mount)

    def cleanup(self) -> None:
        for mount in self.live:
            if is_mounted(mount.mountpoint):
                subprocess.run([FUSERMOUNT, "-u", "-z", str(mount.mountpoint)], check=False)
            if pid_alive(mount.pid):
                os.kill(mount.pid, signal.SIGKILL)
        self.live.clear()


@pytest.fixture
def mounter(tmp_path: Path, azurite: Azurite) -> Iterator[Mounter]:
    mounter = Mounter(tmp_path, azurite)
    try:
        yield mounter
    finally:
        mounter.cleanup()


def upload(container: ContainerClient, blobs: dict[str, bytes], *, workers: int = 16) -> None:
    """Put many blobs in parallel (the SDK is the truth, not the mount)."""
    from concurrent.futures import ThreadPoolExecutor

    def put(item):
        container.upload_blob(item[0], item[1], overwrite=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, blobs.items()))
