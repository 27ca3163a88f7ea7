"""`blobmount check` and `blobmount mount --dry-run`: what a mount would check, without
mounting and without writing to any container.

The broken configs and mount points are test_startup's cases, each run through the dry
run instead of a mount: the same reason must show on a `✗` line, and nothing may be
mounted, started, or written to the container afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import blobmount
from .procs import azurites, daemons, kill_everything
from .test_startup import CASES, TIMEOUT, Context, mount_count

pytestmark = pytest.mark.integration


def failed_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("✗ ")]


def what_exists(service, container) -> tuple[set[str], list[str]]:
    """The containers of the account, and the blobs of the test's container."""
    return ({c.name for c in service.list_containers()},
            sorted(b.name for b in container.list_blobs()))


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_dry_run_says_what_would_fail(case, tmp_path, mounter, azurite, service, container):
    ctx = Context(tmp_path, mounter, container.container_name, azurite.endpoint)
    try:
        setup = case(ctx)
        before = what_exists(service, container)
        result = blobmount("mount", "--dry-run", str(setup.mountpoint),
                           "--config", str(setup.config), timeout=TIMEOUT)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr == ""
        failed = failed_lines(result.stdout)
        assert any(all(expected in line for expected in setup.expect) for line in failed), (
            f"no ✗ line holds all of {setup.expect}:\n{result.stdout}")
        assert "Traceback" not in result.stdout
        for secret in (*setup.secrets, AZURITE_KEY):
            assert secret not in result.stdout

        assert mount_count(setup.mountpoint) == setup.mounted_before
        allowed = {setup.first.pid} if setup.first else set()
        assert set(daemons(tmp_path)) <= allowed
        assert what_exists(service, container) == before
        if setup.first is not None:
            assert os.listdir(setup.first.mountpoint) == ["d"]
    except BaseException:
        kill_everything(tmp_path, tmp_path / "mnt", tmp_path / "first")
        mounter.cleanup()
        raise
    if setup.first is not None:
        mounter.unmount(setup.first)
    mounter.cleanup()


def read_only_sas(container: str) -> str:
    return generate_container_sas(
        AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))


def good_config(tmp_path: Path, endpoint: str, container: str) -> Path:
    """Three entries: a key that may write, a prefix, and a read-only SAS twice (once
    with read_only: false, which the check warns about)."""
    sas = read_only_sas(container)
    document = {
        "cache_dir": str(tmp_path / "cache"),
        "accounts": {
            "key": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                    "endpoint": endpoint},
            "sas": {"account_name": AZURITE_ACCOUNT, "sas_token": sas, "endpoint": endpoint},
        },
        "mounts": [
            {"local": "d", "account": "key", "container": container},
            {"local": "sub", "account": "key", "container": container, "remote": "sub"},
            {"local": "ro", "account": "sas", "container": container},
            {"local": "rw", "account": "sas", "container": container, "read_only": False},
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def test_dry_run_of_a_good_config_passes_and_changes_nothing(tmp_path, azurite, service,
                                                              container):
    container.upload_blob("sub/x.txt", b"x")
    config = good_config(tmp_path, azurite.endpoint, container.container_name)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    before = what_exists(service, container)

    result = blobmount("check", str(mountpoint), "--config", str(config), timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert not failed_lines(result.stdout)
    by_subject = {line[2:].split(":")[0]: line for line in lines}
    assert by_subject["config"].startswith("✓") and "4 entries, 2 accounts" in by_subject["config"]
    assert by_subject[f"mount point {mountpoint}"].startswith("✓")
    assert by_subject["entry 'd'"].startswith("✓")
    assert "(read-write, upload sync)" in by_subject["entry 'd'"]
    assert by_subject["entry 'sub'"].startswith("✓") and "/sub/ " in by_subject["entry 'sub'"]
    assert by_subject["entry 'ro'"].startswith("✓")
    assert "(read-only)" in by_subject["entry 'ro'"]
    assert "neither write nor create" in by_subject["entry 'ro'"]
    # A SAS that cannot write under read_only: false: a warning, not a failure.
    assert by_subject["entry 'rw'"].startswith("! ")
    assert "every upload will be refused" in by_subject["entry 'rw'"]
    cache_line = by_subject[f"cache folder {tmp_path / 'cache'}"]
    assert cache_line.startswith("✓") and "to be made" in cache_line and "free" in cache_line
    assert by_subject["AzCopy"].startswith("✓")
    assert AZURITE_KEY not in result.stdout

    # The dry run made nothing: no mount, no daemon, no cache folder, no blob.
    assert mount_count(mountpoint) == 0
    assert not daemons(tmp_path)
    assert not (tmp_path / "cache").exists()
    assert what_exists(service, container) == before

    # `mount --dry-run` is the same check; --json says the same as the lines.
    as_json = json.loads(blobmount("mount", "--dry-run", str(mountpoint), "--config",
                                   str(config), "--json", timeout=TIMEOUT).stdout)
    assert as_json["ok"] is True
    marks = {"ok": "✓", "warning": "!", "failed": "✗"}
    assert [f"{marks[c['state']]} {c['subject']}" for c in as_json["checks"]] == [
        line.split(":")[0] for line in lines]
    entry = next(c for c in as_json["checks"] if c["subject"] == "entry 'ro'")
    assert entry["read_only"] is True and entry["sas_may_write"] is False


def test_dry_run_of_a_cache_folder_that_cannot_be_made(tmp_path, azurite, container):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    document = {
        "cache_dir": str(blocker / "cache"),
        "accounts": {"az": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                            "endpoint": azurite.endpoint}},
        "mounts": [{"local": "d", "account": "az", "container": container.container_name}],
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    config.chmod(0o600)
    result = blobmount("check", "--config", str(config), timeout=TIMEOUT)
    assert result.returncode == 1
    assert failed_lines(result.stdout) == [
        f"✗ cache folder {blocker / 'cache'}: {blocker} is not a folder",
        f"✗ cache folder {blocker / 'cache' / 'd'}: {blocker} is not a folder"]
    assert "✓ entry 'd'" in result.stdout


def test_dry_run_of_azcopy(tmp_path, mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    broken = tmp_path / "azcopy"
    broken.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    env = {**os.environ, "BLOBMOUNT_AZCOPY": str(broken)}
    result = blobmount("check", "--config", str(config), env=env, timeout=TIMEOUT)
    assert result.returncode == 1
    assert failed_lines(result.stdout) == [
        f"✗ AzCopy: AzCopy {broken} does not run: cannot start"]

    # Not found at all, the daemon moves everything through the SDK: a warning only.
    env["BLOBMOUNT_AZCOPY"] = str(tmp_path / "absent")
    result = blobmount("check", "--config", str(config), env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout
    assert "! AzCopy: " in result.stdout and "through the SDK" in result.stdout


def test_dry_run_of_a_config_others_can_read(mounter, container):
    """As at mount: a warning, and a failure with --strict."""
    config = mounter.config([{"local": "d", "container": container.container_name}])
    config.chmod(0o644)
    relaxed = blobmount("check", "--config", str(config), timeout=TIMEOUT)
    assert relaxed.returncode == 0, relaxed.stdout
    assert f"! config permissions: {config} holds secrets and others can read it" in (
        relaxed.stdout)
    strict = blobmount("mount", "--dry-run", "--strict", "--config", str(config),
                       timeout=TIMEOUT)
    assert strict.returncode == 1
    assert failed_lines(strict.stdout) == [
        f"✗ config permissions: {config} holds secrets and others can read it;"
        f" run `chmod 600 {config}` (refused: --strict)"]


def test_dry_run_of_the_embedded_default(tmp_path):
    """No config anywhere: the embedded Azurite is found, not started; nothing is made."""
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BLOBMOUNT_CONFIG", "AZFUSE_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))
    if os.geteuid() == 0 and Path("/etc/blobmount/config.yaml").exists():
        pytest.skip("root's /etc/blobmount/config.yaml would be checked instead")
    home.mkdir()
    result = blobmount("check", "--json", env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["subject"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["config"]["detail"] == "none found: the embedded Azurite default"
    assert checks["Azurite"]["state"] == "ok"
    for folder in (home / "data" / "blobmount", home / "cache" / "blobmount"):
        kind = "data" if "data" in folder.parts else "cache"
        found = checks[f"{kind} folder {folder}"]
        assert found["state"] == "ok" and found["detail"].startswith("to be made")
    assert list(home.iterdir()) == []
    assert not azurites(tmp_path)
