"""Per-user storage: SAS tokens minted by `blobmount sas`, entries templated by {user},
and `blobmount status` / `mount --list` showing every mount on the machine."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import yaml

from .conftest import FUSERMOUNT, blobmount, is_mounted, pid_alive, upload, wait_for
from .procs import kill_everything

pytestmark = pytest.mark.integration


def mint(admin_config: Path, container: str, *args: str) -> str:
    result = blobmount("sas", "--config", str(admin_config), "--account", "az",
                       "--container", container, *args, check=True)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and result.stderr == ""  # only the token
    return token


def sas_config(mounter, tmp_path: Path, token: str, container: str, name: str,
               **entry) -> Path:
    """A config whose only credential is `token` (given with its '?', as portals show it)."""
    document = {
        "cache_dir": str(tmp_path / "cache-sas"),
        "accounts": {"user": {"account_name": "devstoreaccount1",
                              "endpoint": mounter.azurite.endpoint,
                              "sas_token": f"?{token}"}},
        "mounts": [{"local": "d", "account": "user", "container": container, **entry}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def container_state(container) -> dict[str, bytes]:
    return {blob.name: container.download_blob(blob.name).readall()
            for blob in container.list_blobs()}


def test_read_only_sas_mounts_reads_and_refuses_writes(mounter, container, tmp_path):
    blobs = {"shared/report.txt": b"quarterly numbers\n", "top.txt": b"top\n"}
    upload(container, blobs)
    name = container.container_name
    admin = mounter.config([{"local": "d", "container": name}], name="admin.yaml")
    token = mint(admin, name, "--permissions", "rl", "--expiry", "1h")
    fields = parse_qs(token)
    assert not token.startswith("?")
    assert fields["sp"] == ["rl"] and fields["sr"] == ["c"] and "sig" in fields

    with mounter.mounted(sas_config(mounter, tmp_path, token, name, "reader.yaml")) as mount:
        root = mount.path("d")
        assert sorted(os.listdir(root)) == ["shared", "top.txt"]
        assert (root / "shared/report.txt").read_bytes() == b"quarterly numbers\n"
        assert mount.status()["mounts"][0]["read_only"]  # sp=rl: read-only by default
        for attempt in (lambda: (root / "new.txt").write_bytes(b"x"),
                        lambda: (root / "top.txt").open("ab").close(),
                        lambda: (root / "dir").mkdir(),
                        lambda: (root / "top.txt").unlink(),
                        lambda: (root / "top.txt").rename(root / "moved.txt")):
            with pytest.raises(OSError) as refused:
                attempt()
            assert refused.value.errno in (errno.EROFS, errno.EACCES)
        assert mount.status()["uploads"]["count"] == 0
    assert container_state(container) == blobs


def test_write_refused_by_the_sas_fails_at_close_and_is_kept(mounter, container, tmp_path):
    """An entry said to be writable, on a SAS that cannot write: close() reports EACCES
    (sync mode), the bytes stay in the journal, and a later mount that may write
    uploads them: nothing is lost."""
    upload(container, {"notes.txt": b"v1\n"})
    name = container.container_name
    admin = mounter.config([{"local": "d", "container": name}], name="admin.yaml")
    reader = sas_config(mounter, tmp_path, mint(admin, name, "--permissions", "rl"), name,
                        "reader.yaml", read_only=False, upload="sync")
    with mounter.mounted(reader) as mount:
        path = mount.path("d/notes.txt")
        handle = open(path, "ab")  # noqa: SIM115 (close() is what is under test)
        handle.write(b"v2\n")
        with pytest.raises(PermissionError) as refused:
            handle.close()
        assert refused.value.errno == errno.EACCES
        with pytest.raises(PermissionError):
            mount.path("d/new.txt").write_bytes(b"brand new\n")
        uploads = mount.status()["uploads"]
        assert uploads["count"] == 2 and len(uploads["failed"]) == 2
        assert "access denied" in uploads["failed"][0]["error"]
    assert container_state(container) == {"notes.txt": b"v1\n"}

    # The same cache folder, now with a SAS that may write: the journal goes up at mount.
    writer = sas_config(mounter, tmp_path, mint(admin, name, "--permissions", "racwdl"), name,
                        "writer.yaml")
    with mounter.mounted(writer) as mount:
        assert mount.status()["uploads"]["count"] == 0
        assert container_state(container) == {"notes.txt": b"v1\nv2\n",
                                              "new.txt": b"brand new\n"}


def test_sas_command_errors(mounter, tmp_path):
    admin = mounter.config([{"local": "d", "container": "data"}], name="admin.yaml")
    for args, problem in [
        (["--container", "data", "--permissions", "rq"], "permissions 'rq'"),
        (["--container", "Bad_Name"], "invalid container name"),
        (["--container", "data", "--expiry", "yesterday"], "--expiry 'yesterday'"),
        (["--container", "data", "--account", "nope"], "has no account 'nope'"),
    ]:
        result = blobmount("sas", "--config", str(admin), *args)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("blobmount: ") and problem in result.stderr
        assert len(result.stderr.splitlines()) == 1
    sas_only = sas_config(mounter, tmp_path, "sv=2022-11-02&sp=r&sig=abcdefgh", "data",
                          "sas-only.yaml")
    result = blobmount("sas", "--config", str(sas_only), "--container", "data")
    assert result.returncode == 1 and "has none" in result.stderr


def test_per_user_entry_shows_only_that_users_prefix(mounter, container, tmp_path):
    upload(container, {"users/alice/notes.txt": b"alice's", "users/alice/sub/a.bin": b"a",
                       "users/bob/todo.txt": b"bob's", "admin/secret.txt": b"nobody's"})
    name = container.container_name
    config = mounter.config([{"local": "home", "container": name, "remote": "users/{user}"}],
                            cache_dir=str(tmp_path / "cache/{user}"))
    alice = mounter.mount(config, tmp_path / "alice", "--user", "alice")
    bob_mnt = tmp_path / "bob"
    bob_mnt.mkdir()
    try:
        env = {**os.environ, "BLOBMOUNT_USER": "bob"}
        blobmount("mount", str(bob_mnt), "--config", str(config), "--log-file",
                  str(tmp_path / "bob.log"), env=env, check=True)
        bob_pid = json.loads(blobmount("status", str(bob_mnt), "--json",
                                       check=True).stdout)["pid"]
        assert sorted(os.listdir(alice.path("home"))) == ["notes.txt", "sub"]
        assert alice.path("home/notes.txt").read_bytes() == b"alice's"
        assert os.listdir(bob_mnt / "home") == ["todo.txt"]
        assert (bob_mnt / "home/todo.txt").read_bytes() == b"bob's"
        assert not alice.path("home/admin").exists()
        alice.path("home/new.txt").write_bytes(b"from alice")
        assert container.download_blob("users/alice/new.txt").readall() == b"from alice"
        entry = alice.status()["mounts"][0]
        assert entry["prefix"] == "users/alice/"
        assert entry["cache"] == str(tmp_path / "cache/alice/home")
        result = blobmount("unmount", str(bob_mnt), timeout=60)
        assert result.returncode == 0 and not pid_alive(bob_pid)
    except BaseException:
        kill_everything(tmp_path, bob_mnt)
        mounter.cleanup()
        raise
    else:
        mounter.unmount(alice)


def test_unknown_placeholder_is_one_line(mounter, tmp_path):
    config = mounter.config([{"local": "home", "container": "data", "remote": "u/{usr}"}])
    (tmp_path / "mnt").mkdir()
    result = blobmount("mount", str(tmp_path / "mnt"), "--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (f"blobmount: {config}: mounts[0].remote: unknown placeholder"
                             " {usr}; did you mean {user}? (known: {user}; write {{ and }}"
                             " for literal braces)\n")


def test_list_shows_every_mount_live_and_dead(mounter, container, tmp_path):
    upload(container, {"f.txt": b"x"})
    name = container.container_name
    live = mounter.mount(mounter.config([{"local": "d", "container": name}]),
                         tmp_path / "live")
    doomed = mounter.mount(mounter.config([{"local": "d", "container": name}],
                                          name="second.yaml",
                                          cache_dir=str(tmp_path / "cache2")),
                           tmp_path / "doomed")
    try:
        os.kill(doomed.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(doomed.pid), timeout=10, what="the daemon to die")
        assert is_mounted(doomed.mountpoint)  # a dead mount stays until detached

        for command in (["status"], ["mount", "--list"]):
            text = blobmount(*command, check=True).stdout
            lines = {line.split(": ")[0]: line for line in text.splitlines()}
            assert lines[str(live.mountpoint)].startswith(
                f"{live.mountpoint}: live: daemon pid {live.pid}, config {live.config},"
                " 1 entry (d/), 0 pending uploads")
            assert lines[str(doomed.mountpoint)] == (
                f"{doomed.mountpoint}: dead: its daemon is gone; detach it with"
                f" `fusermount3 -u {doomed.mountpoint}`")
        listed = json.loads(blobmount("status", "--json", check=True).stdout)
        ours = {item["mountpoint"]: item for item in listed
                if item["mountpoint"] in (str(live.mountpoint), str(doomed.mountpoint))}
        assert ours[str(live.mountpoint)]["state"] == "live"
        assert ours[str(live.mountpoint)]["status"]["config"] == str(live.config)
        assert ours[str(doomed.mountpoint)]["state"] == "dead"
        assert ours[str(doomed.mountpoint)]["uid"] == os.getuid()

        subprocess.run([FUSERMOUNT, "-u", str(doomed.mountpoint)], check=True)
        mounter.live.remove(doomed)
        text = blobmount("status", check=True).stdout
        assert str(doomed.mountpoint) not in text and str(live.mountpoint) in text
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.unmount(live)
