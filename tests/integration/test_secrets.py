"""Secrets stay secret: no account key or SAS signature in any log, output or file
left behind; a config others can read is warned about, or refused with --strict."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest
import yaml
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import Mount, blobmount, is_mounted, upload, wait_for

pytestmark = pytest.mark.integration

#: A `sig=` with a value that is not a redaction.
SIGNATURE = re.compile(r"sig=(?!REDACTED)[A-Za-z0-9%+/=]{16,}", re.IGNORECASE)


def _forms(secret: str) -> set[str]:
    """A secret as it may be written: as is, URL-quoted, and its first 24 characters."""
    return {secret, quote(secret, safe=""), secret[:24]}


def _leaks(text: str, secrets: set[str]) -> list[str]:
    found = [secret[:8] + "..." for secret in secrets if secret in text]
    return found + SIGNATURE.findall(text)


def test_no_secret_in_logs_outputs_or_leftovers(mounter, azurite, container, tmp_path):
    sas = generate_container_sas(
        AZURITE_ACCOUNT, container.container_name, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True, write=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    signature = parse_qs(sas)["sig"][0]
    secrets = _forms(AZURITE_KEY) | _forms(signature)
    upload(container, {**{f"d/small{i}.txt": b"x" * 100 for i in range(5)},
                       "d/big.bin": os.urandom(300_000), "s/big.bin": os.urandom(300_000),
                       "s/p/one.bin": os.urandom(200_000), "s/p/two.bin": os.urandom(200_000)})
    config = mounter.config(
        [{"local": "key", "container": container.container_name, "upload": "sync"},
         {"local": "sas", "container": container.container_name, "account": "bysas"}],
        sdk_download_max="64KiB")  # so that reads go through AzCopy jobs too
    document = yaml.safe_load(config.read_text())
    document["accounts"]["bysas"] = {"account_name": AZURITE_ACCOUNT, "sas_token": f"?{sas}",
                                     "endpoint": azurite.endpoint}
    config.write_text(yaml.safe_dump(document))
    outputs: list[str] = []
    with mounter.mounted(config) as mount:
        for entry in ("key", "sas"):
            root = mount.path(entry)
            assert (root / "d/big.bin").stat().st_size == 300_000
            (root / "d/big.bin").read_bytes()  # AzCopy, one blob
            (root / "d/small0.txt").read_bytes()  # SDK GET
            (root / f"d/new-{entry}.txt").write_bytes(b"written here\n")  # upload
            prefetch = blobmount("prefetch", str(root / "s/p"), check=True)  # AzCopy batch
            outputs += [prefetch.stdout, prefetch.stderr]
            for args in (("status", str(mount.mountpoint), "--json"),
                         ("stats", str(root), "--json"), ("cache", "ls", str(root / "d")),
                         ("cache", "ls", str(root / "s"), "--json")):
                result = blobmount(*args, check=True)
                outputs += [result.stdout, result.stderr]
        assert mount.status()["azcopy_jobs"] >= 4  # two reads, two batches
        # A read that fails (the blob went away behind the mount's back).
        container.delete_blob("s/big.bin")
        with contextlib.suppress(OSError):
            (mount.path("key") / "s/big.bin").read_bytes()

    # A mount that fails: a container that does not exist, and a refused key.
    for name, account in (("missing", {}), ("badkey", {"account_key": AZURITE_KEY[:-8] + "A" * 8})):
        bad = mounter.config([{"local": "x", "container": "nosuchcontainer" + name}],
                             name=f"{name}.yaml")
        if account:
            document = yaml.safe_load(bad.read_text())
            document["accounts"]["az"].update(account)
            document["mounts"][0]["container"] = container.container_name
            bad.write_text(yaml.safe_dump(document))
            secrets |= _forms(account["account_key"])
        target = tmp_path / f"mnt-{name}"
        target.mkdir()
        failed = blobmount("mount", str(target), "--config", str(bad), "--log-file",
                           str(tmp_path / f"{name}.log"), "-vv")
        assert failed.returncode != 0 and not is_mounted(target), failed.stderr
        assert failed.stderr.strip()
        outputs += [failed.stdout, failed.stderr]

    for text in outputs:
        assert not _leaks(text, secrets), text
    # Every file the mounts left: logs, the sqlite store, cached copies, AzCopy's
    # job folders (if any are left) -- but not the configs, which hold the secrets.
    configs = {config, *tmp_path.glob("*.yaml")}
    checked = 0
    for folder, _dirs, files in os.walk(tmp_path):
        for name in files:
            path = Path(folder, name)
            if path in configs:
                continue
            data = path.read_bytes().decode("utf-8", errors="replace")
            assert not _leaks(data, secrets), path
            checked += 1
    assert checked > 10 and (tmp_path / "blobmount.log").stat().st_size > 0


def _mount_and_say(mounter, config: Path, *extra: str) -> subprocess.CompletedProcess:
    target = mounter.tmp_path / "mnt"
    target.mkdir(exist_ok=True)
    result = blobmount("mount", str(target), "--config", str(config), "--log-file",
                       str(mounter.tmp_path / "blobmount.log"), *extra)
    if is_mounted(target):
        status = json.loads(blobmount("status", str(target), "--json", check=True).stdout)
        mounter.live.append(Mount(target, config, mounter.tmp_path / "blobmount.log",
                                  status["pid"]))
    return result


def test_a_config_others_can_read_is_warned_about_or_refused(mounter, container):
    config = mounter.config([{"local": "data", "container": container.container_name}])
    config.chmod(0o644)
    refused = _mount_and_say(mounter, config, "--strict")
    assert refused.returncode != 0 and not mounter.live
    assert f"{config} holds secrets and others can read it" in refused.stderr
    assert f"chmod 600 {config}" in refused.stderr and "--strict" in refused.stderr
    assert AZURITE_KEY not in refused.stderr

    warned = _mount_and_say(mounter, config)
    try:
        assert warned.returncode == 0, warned.stderr
        assert f"warning: {config} holds secrets" in warned.stderr
        assert f"chmod 600 {config}" in warned.stderr
        mount = mounter.live[0]
        wait_for(lambda: os.path.isdir(mount.path("data")), what="the mount")
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.unmount(mounter.live[0])

    config.chmod(0o600)  # once fixed, --strict mounts, and says nothing
    quiet = _mount_and_say(mounter, config, "--strict")
    try:
        assert quiet.returncode == 0 and "holds secrets" not in quiet.stderr, quiet.stderr
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.unmount(mounter.live[0])


def test_strict_is_in_the_help():
    result = subprocess.run([sys.executable, "-m", "blobmount", "mount", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--strict" in result.stdout
