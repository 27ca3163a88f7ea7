"""The Docker sidecar, run with podman: docker/Dockerfile built from a local Debian base,
started against the test's Azurite, read and written through the propagated mount from
the host and from a second container that has no FUSE privileges, then stopped.

No Docker engine runs here and no registry is reachable (see PLATFORM.md): the base
image is made with debootstrap and `podman import`, once a day, and kept with podman's
storage and build cache in a scratch folder ($BLOBMOUNT_PODMAN_SCRATCH, default
/var/tmp/blobmount-podman), so a run after the first one of the day rebuilds only what
changed. The first run of a day takes about four minutes; later ones about fifteen
seconds. BLOBMOUNT_TEST_PODMAN=0 skips it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import is_mounted, upload, wait_for

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = Path(os.environ.get("BLOBMOUNT_PODMAN_SCRATCH", "/var/tmp/blobmount-podman"))
# One tag per checkout: test sessions of two checkouts may build side by side.
IMAGE = f"localhost/blobmount-sidecar:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"
BASE_REPO = "localhost/blobmount-debian-base"
AZCOPY = ROOT / "tools/node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64"
# podman on this host: runc (crun fails on its cgroup setup), ulimits within the host's.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""


def _why_not() -> str | None:
    """Why podman cannot run the sidecar here, or None when it can."""
    if os.environ.get("BLOBMOUNT_TEST_PODMAN") == "0":
        return "BLOBMOUNT_TEST_PODMAN=0"
    if os.geteuid() != 0:
        return "needs root (rootful podman, FUSE inside a container)"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/install installs them)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not AZCOPY.exists():
        return "AzCopy is not in tools/ (run scripts/install): the image copies it"
    return None


pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]


class Podman:
    """podman with its storage, run folder and containers.conf under SCRATCH."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        conf = scratch / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 input: bytes | None = None) -> subprocess.CompletedProcess:
        command = ["podman", "--root", str(self.scratch / "root"),
                   "--runroot", str(self.scratch / "run"), *args]
        result = subprocess.run(command, capture_output=True, env=self.env, timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                                 f"{result.stderr.decode(errors='replace')[-3000:]}")
        return result

    def has_image(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One test session at a time builds in the scratch folder."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _base_image(podman: Podman) -> str:
    """Today's Debian base image, made by debootstrap once a day. Older ones go, and
    with them the images and build cache made from them."""
    today = f"{BASE_REPO}:bookworm-{dt.date.today():%Y%m%d}"
    if podman.has_image(today):
        return today
    rootfs = podman.scratch / f"rootfs-{uuid.uuid4().hex[:8]}"
    try:
        result = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.skip(f"debootstrap cannot make a base image here: {result.stdout[-500:]}")
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                             check=True, timeout=300)
        podman("import", "-", today, input=tar.stdout, timeout=300)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    for old in listed.split():
        if old.startswith(f"{BASE_REPO}:") and old != today:
            podman("untag", old, check=False)
    # Dangling images include the build cache: pruned only here, once a day, so that a
    # run after a change to blobmount's code rebuilds one small layer.
    podman("image", "prune", "-f", check=False)
    return today


def _pip_cert_args() -> list[str]:
    """A CA bundle that pip on this host needs (a TLS-inspecting proxy), for the build."""
    cert = os.environ.get("PIP_CERT")
    if not cert:
        result = subprocess.run(["pip3", "config", "get", "global.cert"], capture_output=True,
                                text=True) if shutil.which("pip3") else None
        cert = result.stdout.strip() if result and result.returncode == 0 else ""
    if not cert or not os.path.isfile(cert):
        return []
    return ["-v", f"{cert}:/etc/ssl/certs/build-ca.crt:ro",
            "--build-arg", "PIP_CERT=/etc/ssl/certs/build-ca.crt"]


@pytest.fixture(scope="module")
def podman() -> Podman:
    podman = Podman(SCRATCH)
    probe = podman("info", check=False, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run here: {probe.stderr.decode(errors='replace')[-300:]}")
    return podman


@pytest.fixture(scope="module")
def images(podman: Podman) -> tuple[str, str]:
    """(sidecar image, base image): docker/Dockerfile built on today's local base."""
    with _locked(SCRATCH / "lock"):
        base = _base_image(podman)
        podman("build", "--network", "host", "--layers", "-f", "docker/Dockerfile",
               "--build-arg", f"BASE_IMAGE={base}", *_pip_cert_args(), "-t", IMAGE,
               str(ROOT), timeout=1200)
    return IMAGE, base


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A host folder that is a shared mount, as the sidecar's rshared volume needs."""
    folder = tmp_path / "shared"
    folder.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    subprocess.run(["mount", "--make-rshared", str(folder)], check=True)
    try:
        yield folder
    finally:
        if is_mounted(folder / "blob"):
            subprocess.run(["umount", "-l", str(folder / "blob")], check=False)
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_compose_file_matches_what_is_tested():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    sidecar, app = compose["services"]["blobmount"], compose["services"]["app"]
    assert sidecar["devices"] == ["/dev/fuse"] and sidecar["cap_add"] == ["SYS_ADMIN"]
    assert sidecar["volumes"][0]["bind"]["propagation"] == "rshared"
    assert sidecar["build"]["dockerfile"] == "docker/Dockerfile"
    assert app["volumes"][0]["bind"]["propagation"] == "rslave"
    assert "devices" not in app and "cap_add" not in app
    assert app["volumes"][0]["source"] == sidecar["volumes"][0]["source"]


def test_sidecar_serves_the_host_and_an_unprivileged_container(
        podman, images, shared, azurite, container, tmp_path):
    image, base = images
    upload(container, {"data/hello.txt": b"hello from the blob\n"})
    key_file = tmp_path / "account_key"
    key_file.write_text(AZURITE_KEY)
    key_file.chmod(0o600)
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "accounts": {"az": {"account_name": AZURITE_ACCOUNT, "endpoint": azurite.endpoint,
                            "account_key_file": "/run/secrets/account_key"}},
        "mounts": [
            {"local": "d", "account": "az", "container": container.container_name,
             "remote": "data"},
            {"local": "later", "account": "az", "container": container.container_name,
             "remote": "later", "upload": "async"},
        ],
        # Async uploads wait this long: what is written just before the stop is pending.
        "upload_batch_window": 120,
    }))
    name = f"blobmount-test-{uuid.uuid4().hex[:12]}"
    podman("run", "-d", "--name", name, "--network", "host", "--device", "/dev/fuse",
           "--cap-add", "SYS_ADMIN", "-v", f"{shared}:/data:rshared",
           "-v", f"{config}:/etc/blobmount/config.yaml:ro",
           "-v", f"{key_file}:/run/secrets/account_key:ro",
           image, "/data/blob", "-o", "allow_other")
    blob = shared / "blob"
    try:
        wait_for(lambda: is_mounted(blob) or not _running(podman, name), timeout=90,
                 what="the sidecar's mount to reach the host")
        assert is_mounted(blob), podman("logs", name, check=False).stderr.decode()

        # The host reads and writes through the propagated mount.
        assert (blob / "d/hello.txt").read_bytes() == b"hello from the blob\n"
        (blob / "d/from-host.txt").write_bytes(b"written on the host")
        assert container.download_blob("data/from-host.txt").readall() == (
            b"written on the host")

        # So does a container with no /dev/fuse and no capability (rslave).
        app = ["run", "--rm", "--network", "none", "-v", f"{shared}:/data:rslave"]
        result = podman(*app, base, "sh", "-c",
                        "cat /data/blob/d/hello.txt && echo from-app > /data/blob/d/app.txt")
        assert result.stdout == b"hello from the blob\n"
        assert container.download_blob("data/app.txt").readall() == b"from-app\n"
        as_user = podman(*app, "--user", "1000:1000", base, "cat", "/data/blob/d/app.txt")
        assert as_user.stdout == b"from-app\n"  # allow_other: any user of the app

        # Stopping the sidecar (SIGTERM) unmounts after the pending upload.
        (blob / "later/pending.txt").write_bytes(b"uploaded on the way out")
        assert not any(b.name.startswith("later/") for b in container.list_blobs())
        podman("stop", "-t", "120", name, timeout=180)
        state = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert state == b"0"
        assert container.download_blob("later/pending.txt").readall() == (
            b"uploaded on the way out")
        assert not is_mounted(blob)
        logs = podman("logs", name).stdout.decode() + podman("logs", name).stderr.decode()
        assert "mounted 2 entries on /data/blob" in logs
        assert "Traceback" not in logs and "warning" not in logs
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def _running(podman: Podman, name: str) -> bool:
    state = podman("inspect", name, "--format", "{{.State.Running}}", check=False)
    return state.stdout.strip() == b"true"
