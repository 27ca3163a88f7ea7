"""Any user of the machine mounts: a user made for the test, who is not root, runs the
system-wide /usr/local/bin/blobmount that scripts/install links, as it would from a login
shell (its own HOME, none of root's environment), mounts a config and the embedded
default, and uses them; the SDK checks the containers.

The user gets /dev/fuse for the module's duration only if it cannot open it already (a
file ACL naming it, removed afterwards); the user, its home, its mounts and its processes
(found by uid, killed by PID) are gone at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import ContainerClient

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import FUSERMOUNT, is_mounted, pid_alive, upload, wait_for
from .system_install import PROGRAM, not_this_checkout

MiB = 1024 * 1024
FUSE_DEVICE = Path("/dev/fuse")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="making a user and lending it /dev/fuse needs root"),
]


@dataclass
class User:
    """An unprivileged user of the machine, made for these tests."""

    name: str
    uid: int
    gid: int
    home: Path

    def run(self, *argv: str | os.PathLike, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run argv as this user, with the environment a login would give it."""
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
               "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        command = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                   "env", "-i", *(f"{key}={value}" for key, value in env.items()),
                   *map(str, argv)]
        result = subprocess.run(command, cwd=self.home, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"as {self.name}: {' '.join(map(str, argv))} exited"
                                 f" {result.returncode}:\n{result.stderr}")
        return result

    def processes(self) -> list[int]:
        """The PIDs of this user's live processes."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == self.uid and pid_alive(int(entry)):
                    found.append(int(entry))
        return found

    def mounts(self) -> list[Path]:
        with open("/proc/self/mounts") as table:
            points = [Path(line.split(" ")[1]) for line in table]
        return [point for point in points if point.is_relative_to(self.home)]

    def clean_up(self) -> None:
        """Detach what the user still has mounted, and end its processes, by PID."""
        for point in self.mounts():
            subprocess.run([FUSERMOUNT, "-u", "-z", str(point)], check=False)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.processes(), timeout=30, what=f"{self.name}'s processes")


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    name = f"bm{uuid.uuid4().hex[:12]}"
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                   check=True, capture_output=True, timeout=60)
    entry = pwd.getpwnam(name)
    made = User(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    try:
        yield made
    finally:
        made.clean_up()
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True,
                       timeout=60)


@pytest.fixture(scope="module")
def fuse_access(user: User) -> Iterator[None]:
    """/dev/fuse readable and writable by `user`: as it is, or by an ACL entry for it."""
    if user.run("test", "-r", FUSE_DEVICE, "-a", "-w", FUSE_DEVICE, check=False).returncode == 0:
        yield
        return
    if shutil.which("setfacl") is None:
        pytest.fail(f"{user.name} cannot open {FUSE_DEVICE} and setfacl is missing:"
                    " run scripts/install (Debian: acl)")
    given = subprocess.run(["setfacl", "-m", f"u:{user.name}:rw", str(FUSE_DEVICE)],
                           capture_output=True, text=True, timeout=60)
    assert given.returncode == 0, f"setfacl on {FUSE_DEVICE}: {given.stderr}"
    try:
        yield
    finally:
        subprocess.run(["setfacl", "-x", f"u:{user.name}", str(FUSE_DEVICE)], check=False,
                       timeout=60)


@pytest.fixture
def as_user(user: User, fuse_access: None) -> Iterator[User]:
    """The user, with the system-wide blobmount this checkout installed; cleaned up after."""
    wrong = not_this_checkout(PROGRAM)
    if wrong:
        pytest.fail(f"{wrong}: run scripts/install (as root) to test this checkout")
    try:
        yield user
    finally:
        user.clean_up()


def blobs(container: ContainerClient) -> dict[str, bytes]:
    return {blob.name: container.download_blob(blob.name).readall()
            for blob in container.list_blobs()}


def status(user: User, mountpoint: Path) -> dict:
    return json.loads(user.run(PROGRAM, "status", mountpoint, "--json").stdout)


def fuse_conf_allows_other() -> bool:
    with contextlib.suppress(OSError), open("/etc/fuse.conf") as conf:
        return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in conf)
    return False


def owned_by(path: Path, user: User) -> bool:
    return path.exists() and path.stat().st_uid == user.uid


def test_a_user_mounts_a_config_with_its_own_folders(as_user, container, azurite):
    user = as_user
    big = os.urandom(2 * MiB)
    upload(container, {"dir/a.txt": b"alpha\n", "top.txt": b"top\n", "big.bin": big})
    config = user.home / "config.yaml"
    # No cache_dir: the default for a user who is not root is its own. Files above 1 MiB
    # move through AzCopy, which the user must be able to run too.
    config.write_text(yaml.safe_dump({
        "accounts": {"az": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                            "endpoint": azurite.endpoint}},
        "mounts": [{"local": "d", "account": "az", "container": container.container_name}],
        "sdk_download_max": "1MiB", "sdk_upload_max": "1MiB",
    }))
    os.chown(config, user.uid, user.gid)
    config.chmod(0o600)
    mountpoint = user.home / "mnt"
    user.run("mkdir", mountpoint)

    user.run(PROGRAM, "mount", mountpoint, "--config", config, "-vv")
    assert is_mounted(mountpoint)
    state = status(user, mountpoint)
    pid = state["pid"]
    assert os.stat(f"/proc/{pid}").st_uid == user.uid
    assert Path(state["mounts"][0]["cache"]).is_relative_to(user.home / ".cache/blobmount")
    log = user.home / ".blobmount/blobmount.log"
    assert owned_by(log, user)
    sockets = list((user.home / ".blobmount/run").glob("*.sock"))
    assert len(sockets) == 1 and owned_by(sockets[0], user)
    assert (user.home / ".blobmount/run").stat().st_mode & 0o777 == 0o700
    # Only root may set the kernel's read-ahead: one debug line, nothing else.
    wait_for(lambda: f"read-ahead of {mountpoint} stays at the kernel's default"
             in log.read_text(), what="the read-ahead debug line")

    root = mountpoint / "d"
    assert user.run("ls", "-1", root).stdout.split() == ["big.bin", "dir", "top.txt"]
    assert user.run("cat", root / "dir/a.txt").stdout == "alpha\n"
    assert user.run("sha256sum", root / "big.bin").stdout.split()[0] == (
        hashlib.sha256(big).hexdigest())
    user.run("sh", "-c", 'printf "written by a user\\n" > "$1"', "sh", root / "dir/new.txt")
    user.run("sh", "-c", 'head -c 3145728 /dev/zero > "$1"', "sh", root / "zeros.bin")
    user.run("mv", root / "top.txt", root / "dir/moved.txt")
    user.run(PROGRAM, "sync", mountpoint)
    assert blobs(container) == {"dir/a.txt": b"alpha\n", "big.bin": big,
                                "dir/new.txt": b"written by a user\n",
                                "dir/moved.txt": b"top\n", "zeros.bin": bytes(3 * MiB)}
    assert status(user, mountpoint)["azcopy_jobs"] == 2  # big.bin down, zeros.bin up
    # The mount is the user's: without allow_other, the kernel keeps even root out.
    with pytest.raises(PermissionError):
        os.listdir(root)

    user.run(FUSERMOUNT, "-u", mountpoint)
    wait_for(lambda: not pid_alive(pid), timeout=60, what="the daemon to exit")
    assert not is_mounted(mountpoint)

    other = user.run(PROGRAM, "mount", mountpoint, "--config", config, "-o", "allow_other",
                     check=False)
    if fuse_conf_allows_other():
        assert other.returncode == 0, other.stderr
        user.run(PROGRAM, "unmount", mountpoint)
    else:
        assert (other.returncode, other.stderr) == (
            1, "blobmount: -o allow_other: only root may give it, unless /etc/fuse.conf"
               " has a line user_allow_other\n")
    assert not is_mounted(mountpoint)


def test_a_user_mounts_the_embedded_default(as_user):
    user = as_user
    mountpoint = user.home / "data"
    user.run("mkdir", mountpoint)
    data = user.home / ".local/share/blobmount/azurite"

    started = user.run(PROGRAM, "mount", mountpoint)
    assert "no config found: serving the embedded Azurite" in started.stdout
    assert f"data in {data})" in started.stdout
    assert is_mounted(mountpoint)
    state = status(user, mountpoint)
    pid, endpoint = state["pid"], state["mounts"][0]["endpoint"]
    assert Path(state["mounts"][0]["cache"]).is_relative_to(user.home / ".cache/blobmount")
    assert owned_by(data, user)

    root = mountpoint / "blobmount"
    assert user.run("ls", "-1", mountpoint).stdout.split() == ["blobmount"]
    user.run("mkdir", root / "notes")
    user.run("sh", "-c", 'printf "a user\'s own\\n" > "$1"', "sh", root / "notes/first.txt")
    assert user.run("cat", root / "notes/first.txt").stdout == "a user's own\n"
    user.run("mv", root / "notes/first.txt", root / "notes/kept.txt")
    assert user.run("ls", "-1", root / "notes").stdout.split() == ["kept.txt"]
    user.run(PROGRAM, "sync", mountpoint)
    embedded = ContainerClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};", "blobmount")
    with embedded:
        # mkdir made the folder's marker blob, "notes".
        assert blobs(embedded) == {"notes": b"", "notes/kept.txt": b"a user's own\n"}

    user.run(PROGRAM, "unmount", mountpoint)
    assert not is_mounted(mountpoint)
    wait_for(lambda: not pid_alive(pid), timeout=60, what="the daemon to exit")
    # The embedded Azurite went with its daemon: nothing of the user's runs on.
    wait_for(lambda: not user.processes(), timeout=60, what=f"{user.name}'s processes to end")
