"""A mount's life: started, asked about, and ended every way a user can end it.

Whatever ends a mount (`fusermount3 -u`, `blobmount unmount`, SIGTERM, SIGINT), the
daemon must be gone within a few seconds and nothing left mounted. Also: the
foreground mode, `status`, the embedded Azurite used when no config exists, and that
no secret reaches a log, the status output or the cache folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.storage.blob import BlobServiceClient

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import FUSERMOUNT, blobmount, is_mounted, pid_alive, upload, wait_for
from .procs import accepts, azurites, daemons, kill_everything, mount_points, one_error_line

pytestmark = pytest.mark.integration

# "Within a few seconds" of being told to go.
EXIT_TIMEOUT = 5.0
STATUS_KEYS = {"pid", "mountpoint", "config", "mounts", "cache_bytes", "downloads"}
ENTRY_KEYS = {"local", "account", "endpoint", "container", "prefix", "cache", "read_only",
              "upload"}
# A SAS signature that was not masked: `sig=` followed by anything but the mask.
UNMASKED_SIG = re.compile(r"(?i)sig=(?!REDACTED)[^&\s'\"]+")


def test_unmount_of_a_folder_that_is_not_mounted(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for command in ("status", "unmount"):
        for target in (folder, tmp_path / "absent"):
            result = blobmount(command, str(target), timeout=30)
            line = one_error_line(result)
            assert str(target) in line
            assert result.stdout == ""


@pytest.mark.parametrize("how", ["fusermount3", "blobmount-unmount", "SIGTERM", "SIGINT"])
def test_every_way_of_ending_a_mount_ends_the_daemon(how, mounter, container):
    upload(container, {"hello.txt": b"hello"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mount = mounter.mount(config)
    try:
        assert mount.path("d/hello.txt").read_bytes() == b"hello"
        if how == "fusermount3":
            subprocess.run([FUSERMOUNT, "-u", str(mount.mountpoint)], check=True, timeout=30)
        elif how == "blobmount-unmount":
            result = blobmount("unmount", str(mount.mountpoint), timeout=30)
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""
            # It returns once the daemon is gone, not before.
            assert not pid_alive(mount.pid)
        else:
            os.kill(mount.pid, getattr(signal, how))
        wait_for(lambda: not pid_alive(mount.pid), timeout=EXIT_TIMEOUT,
                 what="the daemon to exit")
        assert not is_mounted(mount.mountpoint)
        assert os.listdir(mount.mountpoint) == []
        one_error_line(blobmount("status", str(mount.mountpoint), timeout=30))
        log = mount.log()
        assert "Traceback" not in log
        assert " ERROR " not in log
        if how.startswith("SIG"):
            assert f"received {how}" in log
        assert "unmounted" in log
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.live.remove(mount)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground_stays_attached_until_signalled(signum, mounter, container, tmp_path):
    upload(container, {"a/file.txt": b"in the foreground"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "blobmount", "mount", "--foreground", str(mountpoint),
             "--config", str(config), "--log-file", str(tmp_path / "fg.log")],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: is_mounted(mountpoint) or process.poll() is not None, timeout=30,
                 what="the foreground mount")
        assert process.poll() is None, err.read_text()
        assert (mountpoint / "d/a/file.txt").read_bytes() == b"in the foreground"
        status = json.loads(blobmount("status", str(mountpoint), "--json", check=True).stdout)
        assert status["pid"] == process.pid  # the foreground process is the daemon itself
        process.send_signal(signum)
        assert process.wait(timeout=EXIT_TIMEOUT) == 0
        assert not is_mounted(mountpoint)
        assert out.read_text().strip() == f"mounted 1 entry on {mountpoint}"
        assert "Traceback" not in err.read_text()
    except BaseException:
        if process.poll() is None:
            process.kill()
        process.wait()
        if is_mounted(mountpoint):
            subprocess.run([FUSERMOUNT, "-u", "-z", str(mountpoint)], check=False)
        raise


@pytest.mark.parametrize("name", ["with space, tab\tand é", "via-symlink"])
def test_unmount_of_an_awkwardly_named_mount_point(name, mounter, container, tmp_path):
    """`blobmount unmount` finds the mount however /proc/self/mounts spells its name."""
    config = mounter.config([{"local": "d", "container": container.container_name}])
    real = tmp_path / ("real" if name == "via-symlink" else name)
    real.mkdir()
    given = real
    if name == "via-symlink":
        given = tmp_path / "link"
        given.symlink_to(real)
    try:
        blobmount("mount", str(given), "--config", str(config), "--log-file",
                  str(tmp_path / "blobmount.log"), check=True, timeout=30)
        assert str(real) in mount_points()
        pid = json.loads(blobmount("status", str(given), "--json", check=True).stdout)["pid"]
        result = blobmount("unmount", str(given), timeout=30)
        assert result.returncode == 0, result.stderr
        assert not pid_alive(pid)
        assert str(real) not in mount_points()
    except BaseException:
        kill_everything(tmp_path, real)
        raise


def test_status_reports_the_mount_table_cache_and_downloads(mounter, container, tmp_path):
    upload(container, {"x/one.txt": b"1" * 1000, "two.txt": b"22"})
    name = container.container_name
    config = mounter.config([
        {"local": "whole", "container": name},
        {"local": "sub/x", "container": name, "remote": "x", "read_only": True},
    ])
    with mounter.mounted(config) as mount:
        status = mount.status()
        assert set(status) >= STATUS_KEYS
        assert status["pid"] == mount.pid and pid_alive(mount.pid)
        assert status["mountpoint"] == str(mount.mountpoint)
        assert status["config"] == str(config)
        assert status["cache_bytes"] == 0
        assert status["downloads"] == {"total": 0, "by_path": {}}
        entries = {entry["local"]: entry for entry in status["mounts"]}
        assert set(entries) == {"whole", "sub/x"}
        for entry in entries.values():
            assert set(entry) == ENTRY_KEYS
            assert entry["account"] == AZURITE_ACCOUNT
            assert entry["endpoint"] == mounter.azurite.endpoint
            assert entry["container"] == name
            assert Path(entry["cache"]).is_relative_to(tmp_path)
        assert entries["whole"]["prefix"] == "" and not entries["whole"]["read_only"]
        assert entries["sub/x"]["prefix"] == "x/" and entries["sub/x"]["read_only"]

        assert mount.path("whole/two.txt").read_bytes() == b"22"
        assert mount.path("sub/x/one.txt").read_bytes() == b"1" * 1000
        assert mount.path("whole/two.txt").read_bytes() == b"22"  # cached: no new download
        status = mount.status()
        assert status["downloads"] == {"total": 2,
                                       "by_path": {"whole/two.txt": 1, "sub/x/one.txt": 1}}
        assert status["cache_bytes"] == 1002

        text = blobmount("status", str(mount.mountpoint), check=True).stdout
        assert str(mount.pid) in text and str(config) in text
        assert "whole/" in text and "sub/x/" in text


def test_unmounting_one_mount_leaves_another_serving(mounter, container, tmp_path):
    upload(container, {"f.txt": b"still here"})
    name = container.container_name
    first = mounter.config([{"local": "d", "container": name}])
    second = mounter.config([{"local": "d", "container": name}], name="second.yaml",
                            cache_dir=str(tmp_path / "cache2"))
    one = mounter.mount(first, tmp_path / "one")
    try:
        two = mounter.mount(second, tmp_path / "two")
    except BaseException:
        mounter.cleanup()
        raise
    try:
        assert one.path("d/f.txt").read_bytes() == b"still here"
        assert one.pid != two.pid
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.unmount(one)
    try:
        assert pid_alive(two.pid) and is_mounted(two.mountpoint)
        assert two.path("d/f.txt").read_bytes() == b"still here"
        assert two.status()["pid"] == two.pid
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.unmount(two)


def test_secrets_stay_out_of_logs_status_and_cache(mounter, container, tmp_path):
    small, large = b"small file", os.urandom(2 * 1024 * 1024)
    upload(container, {"small.txt": small, "big/large.bin": large})
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            sdk_download_max="1MiB")
    # -vvv: the SDK's own request logging too, which is where a key would leak first.
    with mounter.mounted(config, None, "-vv", "-v") as mount:
        assert mount.path("d/small.txt").read_bytes() == small
        assert mount.path("d/big/large.bin").read_bytes() == large  # by AzCopy, with a SAS
        outputs = [blobmount("status", str(mount.mountpoint), "--json", check=True).stdout,
                   blobmount("status", str(mount.mountpoint), check=True).stdout]
        assert mount.status()["downloads"]["total"] == 2
    assert "azcopy" in mount.log().lower(), "the large file should have gone through AzCopy"
    texts = {"log": mount.log(), "status --json": outputs[0], "status": outputs[1]}
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file() and not path.name.startswith("blobmount.sqlite"):
            texts[str(path)] = path.read_bytes().decode(errors="replace")
    assert len(texts) > 3, "expected cache files to look through"
    for where, text in texts.items():
        assert AZURITE_KEY not in text, f"the account key is in {where}"
        assert not UNMASKED_SIG.search(text), f"a SAS signature is in {where}"


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """An environment in which no config exists anywhere: the embedded default applies."""
    if os.geteuid() == 0 and Path("/etc/blobmount/config.yaml").exists():
        pytest.skip("/etc/blobmount/config.yaml exists: root would mount it")
    env = {key: value for key, value in os.environ.items()
           if key != "BLOBMOUNT_CONFIG" and not key.startswith("AZFUSE_")}
    for key, folder in [("HOME", "home"), ("XDG_CONFIG_HOME", "config"),
                        ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")]:
        env[key] = str(tmp_path / folder)
        (tmp_path / folder).mkdir()
    return env


def test_embedded_azurite_when_there_is_no_config(bare_env, tmp_path):
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        result = blobmount("mount", str(mountpoint), env=bare_env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        lines = result.stdout.splitlines()
        assert len(lines) == 1 and "Azurite" in lines[0], lines
        assert is_mounted(mountpoint)
        assert (mountpoint / "blobmount").is_dir()

        status = json.loads(blobmount("status", str(mountpoint), "--json", env=bare_env,
                                      check=True).stdout)
        pid = status["pid"]
        assert status["config"] == "<embedded default>"
        [entry] = status["mounts"]
        assert entry["container"] == "blobmount" and entry["local"] == "blobmount"
        endpoint = entry["endpoint"]
        assert urlsplit(endpoint).hostname == "127.0.0.1"
        port = urlsplit(endpoint).port
        assert endpoint in lines[0]
        # Everything it keeps is under the user's folders, here all in tmp_path.
        assert Path(entry["cache"]).is_relative_to(tmp_path / "cache")
        assert (tmp_path / "data/blobmount").is_dir()
        assert azurites(tmp_path / "data"), "the embedded Azurite should run from the data folder"

        service = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};")
        with service:
            service.get_container_client("blobmount").upload_blob("notes/hi.txt", b"hi there")
        assert (mountpoint / "blobmount/notes/hi.txt").read_bytes() == b"hi there"

        result = blobmount("unmount", str(mountpoint), env=bare_env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert not pid_alive(pid) and not is_mounted(mountpoint)
        assert not accepts(port), "the embedded Azurite still listens after the unmount"
        assert not azurites(tmp_path)
        log = (tmp_path / "home/.blobmount/blobmount.log").read_text()
        assert "Traceback" not in log and AZURITE_KEY not in log
    except BaseException:
        kill_everything(tmp_path, mountpoint)
        raise


@pytest.mark.slow
def test_embedded_default_twice_keeps_one_azurite(bare_env, tmp_path):
    """Two embedded mounts of one user share the data folder: the second is refused.

    And kill -9 of the daemon leaves no Azurite running on that folder.
    """
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    try:
        blobmount("mount", str(first), env=bare_env, timeout=60, check=True)
        line = one_error_line(blobmount("mount", str(second), env=bare_env, timeout=60))
        assert f"data folder {tmp_path / 'data/blobmount'} is in use" in line
        # Refused before it started an Azurite of its own on the same folder.
        started = (tmp_path / "data/blobmount/azurite/azurite.log").read_text()
        assert started.count("successfully listens") == 1, started
        assert not is_mounted(second)
        assert len(azurites(tmp_path)) == 1
        assert (first / "blobmount").is_dir()
        assert os.listdir(first / "blobmount") == []
        status = json.loads(blobmount("status", str(first), "--json", env=bare_env,
                                      check=True).stdout)
        os.kill(status["pid"], signal.SIGKILL)
        wait_for(lambda: not azurites(tmp_path), timeout=EXIT_TIMEOUT,
                 what="the Azurite of the killed daemon to go")
        assert not accepts(urlsplit(status["mounts"][0]["endpoint"]).port)
        assert not daemons(tmp_path)
    finally:
        kill_everything(tmp_path, first, second)  # detaches the dead mount

