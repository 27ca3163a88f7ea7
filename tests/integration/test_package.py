"""The built package works without the checkout: `python -m build` makes the sdist and
the wheel, the wheel goes into a fresh virtualenv outside the checkout, and there the
installed `blobmount` mounts the embedded default, writes, reads and unmounts.

The build runs on a copy of the files git would check out (tracked, or new and not
ignored), so nothing is written into the checkout and a file the sdist lacks fails the
wheel, which is built from the sdist. No network is used: the build runs without
isolation on the checkout venv's setuptools, and the fresh venv sees the checkout
venv's installed libraries through a folder of links that leaves blobmount itself out
(`pip check` then proves the wheel's declared requirements are met by them). AzCopy and
Azurite come from `tools/` through $BLOBMOUNT_AZCOPY and $BLOBMOUNT_AZURITE, as they
would for anyone whose package does not sit next to a `tools/` folder.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY
from blobmount.tools import find_azcopy, find_azurite

from .conftest import FUSERMOUNT, is_mounted, pid_alive, wait_for
from .procs import azurites, daemons, kill_everything

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Root's config, which would be found before the embedded default.
SYSTEM_CONFIG = Path("/etc/blobmount/config.yaml")


def version() -> str:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["metadata"]["version"]


def run(args: list[str], **options) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **options)
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stderr}"
    return result


def checkout_copy(destination: Path) -> Path:
    listed = run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode & 0o777)
    return destination


def libraries_without_blobmount(folder: Path) -> Path:
    """Links to the checkout venv's installed packages, but not to blobmount's own
    metadata or its editable hook (nor any .pth: it would not run from here anyway)."""
    folder.mkdir()
    for item in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = item.name.lower()
        if name.startswith(("blobmount", "__editable__")) or name.endswith(".pth"):
            continue
        (folder / item.name).symlink_to(item)
    return folder


@pytest.mark.slow
def test_the_built_wheel_installs_and_mounts(tmp_path):
    if SYSTEM_CONFIG.exists() and os.geteuid() == 0:
        pytest.skip(f"{SYSTEM_CONFIG} exists: root's mount would use it, not the default")
    expected = version()
    source = checkout_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        cwd=tmp_path)
    wheel = dist / f"blobmount-{expected}-py3-none-any.whl"
    sdist = dist / f"blobmount-{expected}.tar.gz"

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = archive.read(f"blobmount-{expected}.dist-info/METADATA").decode()
    assert {"blobmount/schema.sql", "blobmount/py.typed", "blobmount/cli.py",
            f"blobmount-{expected}.dist-info/LICENSE"} <= names
    assert not any(name.startswith("tests/") for name in names)
    assert f"\nVersion: {expected}\n" in meta and "\nLicense: MIT\n" in meta
    with tarfile.open(sdist) as archive:
        members = {name.partition("/")[2] for name in archive.getnames()}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "blobmount/schema.sql",
            "blobmount/py.typed", "systemd/blobmount@.service", "docker/Dockerfile"} <= members

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                   "['purelib'])"]).stdout.strip()
    libraries = libraries_without_blobmount(tmp_path / "libraries")
    Path(purelib, "checkout-libraries.pth").write_text(f"{libraries}\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    run(pip + ["install", "--no-index", "--no-deps", str(wheel)])
    run(pip + ["check"])

    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BLOBMOUNT_", "PYTHON", "AZFUSE_", "XDG_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"),
               BLOBMOUNT_AZCOPY=str(find_azcopy()), BLOBMOUNT_AZURITE=str(find_azurite()))
    installed = venv / "bin" / "blobmount"

    def blobmount(*args: str) -> subprocess.CompletedProcess:
        return run([str(installed), *args], cwd=tmp_path, env=env)

    where = run([str(python), "-c", "import blobmount; print(blobmount.__file__);"
                 " print(blobmount.__version__)"], cwd=tmp_path, env=env).stdout.split()
    assert where == [f"{purelib}/blobmount/__init__.py", expected]
    assert "mount" in blobmount("--help").stdout
    assert blobmount("--version").stdout.splitlines()[0] == f"blobmount {expected}"

    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    pid = None
    try:
        note = blobmount("mount", str(mountpoint)).stdout
        assert "embedded Azurite" in note
        assert is_mounted(mountpoint)
        status = json.loads(blobmount("status", str(mountpoint), "--json").stdout)
        pid = status["pid"]
        # The daemon runs the fresh venv's Python, hence the installed package.
        daemon_argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert daemon_argv[:3] == [os.fsencode(python), b"-m", b"blobmount"]

        (mountpoint / "blobmount" / "hello.txt").write_bytes(b"from the wheel\n")
        assert (mountpoint / "blobmount" / "hello.txt").read_bytes() == b"from the wheel\n"
        # The upload (sync mode: done at close) is in the embedded Azurite's container.
        endpoint = status["mounts"][0]["endpoint"]
        with BlobServiceClient(endpoint, credential={"account_name": AZURITE_ACCOUNT,
                                                     "account_key": AZURITE_KEY}) as client:
            blob = client.get_blob_client("blobmount", "hello.txt")
            assert blob.download_blob().readall() == b"from the wheel\n"

        blobmount("unmount", str(mountpoint))
        assert not is_mounted(mountpoint)
        wait_for(lambda: not pid_alive(pid), timeout=30, what="the daemon to exit")
        wait_for(lambda: not azurites(tmp_path), timeout=30, what="its Azurite to stop")
    except BaseException:
        if is_mounted(mountpoint):
            subprocess.run([FUSERMOUNT, "-u", "-z", str(mountpoint)], check=False)
        kill_everything(tmp_path)
        raise
    assert not daemons(tmp_path)
