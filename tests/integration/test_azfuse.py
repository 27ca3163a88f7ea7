"""`from blobmount.azfuse import File`: azfuse's scripts, unchanged but for the import,
against Azurite with azfuse's config format; the container checked through the SDK.

Each script runs in a process of its own, as a user's would, from a working folder
holding azfuse's `aux_data/`. HOME is a short folder of the test's own, so the mounts
blobmount.azfuse makes for itself (and every control socket) are the test's alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY
from blobmount.inventory import blobmount_mounts

from .conftest import FUSERMOUNT, blobmount, pid_alive, upload, wait_for

pytestmark = pytest.mark.integration


class Project:
    """An azfuse user's working folder: aux_data/configs/azfuse.yaml, the account file,
    and the environment azfuse reads."""

    def __init__(self, root: Path, home: Path, endpoint: str, container: str) -> None:
        self.root = root
        self.home = home
        self.config = root / "aux_data" / "configs" / "azfuse.yaml"
        accounts = root / "aux_data" / "storage_account"
        accounts.mkdir(parents=True)
        self.config.parent.mkdir(parents=True)
        (accounts / "acct.yaml").write_text(yaml.safe_dump({
            "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
            "sas_token": None, "container_name": container, "endpoint": endpoint}))
        (accounts / "acct.yaml").chmod(0o600)
        self.config.write_text(yaml.safe_dump([
            {"cache": str(root / "cache" / "data"), "local": "data", "remote": "azfuse_data",
             "storage_account": "acct"}]))
        self.env = {**os.environ, "HOME": str(home), "AZFUSE_USE_FUSE": "1",
                    "AZFUSE_CLOUD_FUSE_CONFIG_FILE": str(self.config)}
        self.env.pop("BLOBMOUNT_MOUNTPOINT", None)

    def run(self, script: str, *, env: dict | None = None, check: bool = True,
            ) -> subprocess.CompletedProcess:
        """Run a Python script in the working folder, as the user would."""
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                                cwd=self.root, env=env or self.env, capture_output=True,
                                text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"the script failed:\n{result.stdout}\n{result.stderr}")
        return result

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blobmount.azfuse", *args],
                              cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=300)

    def status(self, mountpoint: Path) -> dict:
        return json.loads(blobmount("status", str(mountpoint), "--json", env=self.env,
                                    check=True).stdout)

    def own_mounts(self) -> list[str]:
        """The mounts under this HOME: the ones blobmount.azfuse made."""
        return [record.mountpoint for record in blobmount_mounts()
                if record.mountpoint.startswith(str(self.home) + "/")]


@pytest.fixture
def project(tmp_path, azurite, container, monkeypatch) -> Iterator[Project]:
    # Short: control sockets live under HOME and a socket's path has at most 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="bmaz", dir="/tmp"))
    monkeypatch.setenv("HOME", str(home))  # the mounter's mounts and our Clients too
    # As root, an azfuse config (which names no cache_dir) keeps its store in
    # /var/cache/blobmount, which another suite on the machine may hold: this test's own.
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "state"))
    root = tmp_path / "work"
    root.mkdir()
    made = Project(root, home, azurite.endpoint, container.container_name)
    # The mounter runs from elsewhere: it finds the account files by the variable.
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER",
                       str(root / "aux_data" / "storage_account"))
    made.env["AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER"] = str(root / "aux_data" / "storage_account")
    try:
        yield made
    finally:
        for mountpoint in made.own_mounts():
            pid = _daemon_pid(made, mountpoint)
            subprocess.run([FUSERMOUNT, "-u", "-z", mountpoint], check=False)
            if pid:
                wait_for(lambda pid=pid: not pid_alive(pid), timeout=60,
                         what="the daemon of blobmount.azfuse's mount to exit")
        shutil.rmtree(home, ignore_errors=True)


def _daemon_pid(project: Project, mountpoint: str) -> int | None:
    result = blobmount("status", mountpoint, "--json", env=project.env)
    return json.loads(result.stdout)["pid"] if result.returncode == 0 else None


def blobs(container, prefix: str) -> dict[str, bytes]:
    return {blob.name: container.download_blob(blob.name).readall()
            for blob in container.list_blobs(name_starts_with=prefix)}


# --------------------------------------------------------------------------- azfuse's README


def test_open_to_write_and_to_read(project, mounter, container):
    """README's first two examples, and test_basic's write, then read after
    clear_cache: the blob is in the container, and the read comes from it."""
    mount = mounter.mount(project.config)  # found as the live mount of this config
    project.run("""
        from blobmount.azfuse import File
        with File.open('data/abc.txt', 'w') as fp:
            fp.write('abc')
    """)
    assert blobs(container, "azfuse_data/") == {"azfuse_data/abc.txt": b"abc"}
    # A block that raises leaves the blob as it was, as in azfuse.
    failed = project.run("""
        from blobmount.azfuse import File
        with File.open('data/abc.txt', 'w') as fp:
            fp.write('half')
            raise SystemExit(3)
    """, check=False)
    assert failed.returncode == 3
    assert blobs(container, "azfuse_data/") == {"azfuse_data/abc.txt": b"abc"}
    # Changed behind the mount, same size (the mount trusts its listing for listing_ttl).
    container.upload_blob("azfuse_data/abc.txt", b"ABC", overwrite=True)
    result = project.run("""
        from blobmount.azfuse import File
        assert File.is_cached('data/abc.txt')
        File.clear_cache('data/abc.txt')
        assert not File.is_cached('data/abc.txt')
        with File.open('data/abc.txt', 'r') as fp:
            print(fp.read())
        print(File.get_cache_file('data/abc.txt'))
    """)
    content, served = result.stdout.splitlines()
    assert content == "ABC"  # not the cached "abc": cleared, so read from the container
    assert served == str(mount.path("data/abc.txt"))
    assert project.status(mount.mountpoint)["downloads"]["by_path"] == {"data/abc.txt": 1}

    # shm_as_tmp, and send_to_async_upload's clear_cache_after_upload: the copies go
    # once the block has them in the container. upload: a local file to a logical path.
    result = project.run("""
        from blobmount.azfuse import File
        with File.async_upload(enabled=True, shm_as_tmp=True):
            with File.open('data/shm.txt', 'w') as fp:
                fp.write('via shm')
        with File.async_upload(enabled=True):
            with File.open('data/sent.txt', 'w') as fp:
                fp.write('sent')
            File.send_to_async_upload('data/sent.txt', clear_cache_after_upload=True)
        with open('local.txt', 'w') as fp:
            fp.write('uploaded')
        File.upload('local.txt', 'data/up/loaded.txt')
        print(File.is_cached('data/shm.txt'), File.is_cached('data/sent.txt'))
    """)
    assert result.stdout.strip() == "False False"
    assert container.download_blob("azfuse_data/shm.txt").readall() == b"via shm"
    assert container.download_blob("azfuse_data/sent.txt").readall() == b"sent"
    assert container.download_blob("azfuse_data/up/loaded.txt").readall() == b"uploaded"


@pytest.mark.slow
def test_async_upload_of_1000_then_prepare_them_and_read(project, mounter, container):
    """README's fourth example, then its third as written there (a generator of
    one-name lists) on the same 1,000 files once their copies are cleared: leaving the
    async block waited for every upload; the prepare is one AzCopy job, and the reads
    that follow download nothing."""
    mount = mounter.mount(project.config)
    project.run("""
        from blobmount.azfuse import File
        with File.async_upload(enabled=True):
            for i in range(1000):
                with File.open('data/{}.txt'.format(i), 'w') as fp:
                    fp.write(str(i))
    """)
    # Read at once: leaving the block waited for every upload.
    assert blobs(container, "azfuse_data/") == {
        f"azfuse_data/{i}.txt": str(i).encode() for i in range(1000)}
    status = project.status(mount.mountpoint)
    assert status["uploads"]["count"] == 0 and status["async_holds"] == 0
    assert status["downloads"]["total"] == 0

    project.run("""
        from blobmount.azfuse import File
        File.clear_cache('data')
        assert not any(File.is_cached('data/{}.txt'.format(i)) for i in (0, 500, 999))
        File.prepare(['data/{}.txt'.format(i)] for i in range(1000))
        for i in range(1000):
            with File.open('data/{}.txt'.format(i), 'r') as fp:
                content = fp.read()
                assert content == str(i), (i, content)
    """)
    status = project.status(mount.mountpoint)
    assert status["azcopy_jobs"] == 1
    assert status["prefetched"]["files"] == 1000
    by_path = status["downloads"]["by_path"]
    assert len(by_path) == 1000 and set(by_path.values()) == {1}


# --------------------------------------------------------------------------- azfuse's test_basic


def test_basic_batch_and_async_upload(project, mounter, container):
    """test_basic's prepare in batch and async upload: written, cache cleared, fetched
    in one batch (five small files: the SDK's), read back; then rewritten in an
    async_upload block and read back again."""
    mount = mounter.mount(project.config)
    project.run("""
        from blobmount.azfuse import File
        for i in range(5):
            with File.open('data/batch_test/{}.txt'.format(i), 'w') as fp:
                fp.write(str(i))
        File.clear_cache('data/batch_test')
        File.prepare(['data/batch_test/{}.txt'.format(i) for i in range(5)])
        for i in range(5):
            with File.open('data/batch_test/{}.txt'.format(i), 'r') as fp:
                assert fp.read() == str(i)
    """)
    status = project.status(mount.mountpoint)
    assert status["azcopy_jobs"] == 0 and status["prefetched"]["files"] == 5
    assert set(status["downloads"]["by_path"].values()) == {1}
    project.run("""
        from blobmount.azfuse import File
        with File.async_upload(enabled=True):
            for i in range(5):
                with File.open('data/batch_test/{}.txt'.format(i), 'w') as fp:
                    fp.write(str(i + 10))
        File.clear_cache('data/batch_test')
        File.prepare(['data/batch_test/{}.txt'.format(i) for i in range(5)])
        for i in range(5):
            with File.open('data/batch_test/{}.txt'.format(i), 'r') as fp:
                assert fp.read() == str(i + 10)
    """)
    expected = {f"azfuse_data/batch_test/{i}.txt": str(i + 10).encode() for i in range(5)}
    assert {name: data for name, data in blobs(container, "azfuse_data/batch_test/").items()
            if data} == expected  # (and the folder's marker blob, made by mkdir)


# --------------------------------------------------------------------------- our own choices


def test_async_upload_does_not_wait_and_raises_when_an_upload_fails(
        project, mounter, azurite, container):
    """A sync entry on a SAS that cannot write: outside async_upload close() fails
    (it waits for the upload); inside, it returns, and leaving the block raises.
    BLOBMOUNT_MOUNTPOINT names the mount."""
    sas = generate_container_sas(
        AZURITE_ACCOUNT, container.container_name, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    config = mounter.config([{"local": "data", "container": container.container_name,
                              "account": "reader", "read_only": False, "upload": "sync"}])
    document = yaml.safe_load(config.read_text())
    document["accounts"]["reader"] = {"account_name": AZURITE_ACCOUNT, "sas_token": sas,
                                      "endpoint": azurite.endpoint}
    config.write_text(yaml.safe_dump(document))
    mount = mounter.mount(config)
    env = {**project.env, "BLOBMOUNT_MOUNTPOINT": str(mount.mountpoint)}
    result = project.run("""
        from blobmount.azfuse import File
        from blobmount import Client, SyncFailed
        import os
        client = Client(os.environ['BLOBMOUNT_MOUNTPOINT'])
        def write(name):
            with File.open(name, 'w') as fp:
                fp.write('refused')
        try:
            write('data/before.txt')
        except PermissionError:
            print('close refused')
        try:
            with File.async_upload(enabled=True):
                write('data/inside.txt')
                print('close returned', client.status()['async_holds'])
        except SyncFailed as exc:
            print('leaving raised:', sorted(f['blob'].rsplit('/', 1)[1] for f in exc.failed))
        try:
            write('data/after.txt')
        except PermissionError:
            print('close refused', client.status()['async_holds'])
    """, env=env)
    lines = result.stdout.splitlines()
    assert lines[0] == "close refused"
    assert lines[1] == "close returned 1"
    # before.txt too: its bytes stay in the journal, and fail again at each try.
    assert lines[2] == "leaving raised: ['before.txt', 'inside.txt']"
    assert lines[3] == "close refused 0"
    assert list(container.list_blobs()) == []


def test_mounts_the_config_once_and_the_next_process_reuses_it(project, container):
    """No mount of the config anywhere: the first process mounts it in a folder of its
    own and says so once; the second uses that mount."""
    script = """
        import logging
        logging.basicConfig(level=logging.INFO)
        from blobmount.azfuse import File
        from blobmount import Client
        with File.open('data/{name}', 'w') as fp:
            fp.write('{name}')
        with File.open('data/{name}', 'r') as fp:
            assert fp.read() == '{name}'
        print(Client(File._served.mountpoint).status()['pid'])
    """
    first = project.run(script.format(name="one.txt"))
    second = project.run(script.format(name="two.txt"))
    assert first.stderr.count("blobmount.azfuse: mounted") == 1
    assert "mounted" not in second.stderr
    assert first.stdout == second.stdout  # the same daemon
    assert len(project.own_mounts()) == 1
    assert project.own_mounts()[0].startswith(str(project.home / ".blobmount" / "azfuse"))
    assert blobs(container, "azfuse_data/") == {"azfuse_data/one.txt": b"one.txt",
                                                "azfuse_data/two.txt": b"two.txt"}


def test_use_fuse_unset_means_plain_local_files(project, container):
    env = {key: value for key, value in project.env.items() if key != "AZFUSE_USE_FUSE"}
    project.run("""
        from blobmount.azfuse import File
        with File.open('data/abc.txt', 'w') as fp:
            fp.write('abc')
        File.prepare(['data/abc.txt'])
        with File.async_upload(enabled=True):
            assert File.isfile('data/abc.txt') and File.get_file_size('data/abc.txt') == 3
        assert File.list('data') == ['data/abc.txt']
    """, env=env)
    assert (project.root / "data" / "abc.txt").read_text() == "abc"
    assert project.own_mounts() == [] and list(container.list_blobs()) == []


def test_listing_sizes_ranges_and_removal(project, mounter, container):
    upload(container, {"azfuse_data/d/a.bin": b"0123456789", "azfuse_data/d/sub/b.bin": b"xy"})
    mount = mounter.mount(project.config)
    result = project.run("""
        from blobmount.azfuse import File
        import json
        rows = File.list('data/d', return_info=True)
        print(json.dumps([(r['name'], r.get('size_in_bytes')) for r in rows]))
        print(json.dumps(File.list('data/d')))
        print(json.dumps([(r['name'], r['size_in_bytes'])
                          for r in File.walk('data/d', return_info=True)]))
        print(File.read_byte_range('data/d/a.bin', 3, 4).decode())
        print(File.get_file_size('data/d/a.bin'), File.isfile('data/d/a.bin'),
              File.isfile('data/d/none'))
        File.rm('data/d/a.bin')
        print(File.isfile('data/d/a.bin'))
        File.set_access_tier('data/d/sub/b.bin', 'cool')
    """)
    lines = result.stdout.splitlines()
    assert json.loads(lines[0]) == [["data/d/a.bin", 10], ["data/d/sub", None]]
    assert json.loads(lines[1]) == ["data/d/a.bin", "data/d/sub"]
    assert json.loads(lines[2]) == [["data/d/a.bin", 10], ["data/d/sub/b.bin", 2]]
    assert lines[3] == "3456"
    assert lines[4:] == ["10 True False", "False"]
    # The ranged read went to the container: nothing was downloaded into the cache.
    assert project.status(mount.mountpoint)["downloads"]["total"] == 0
    assert blobs(container, "azfuse_data/") == {"azfuse_data/d/sub/b.bin": b"xy"}
    assert container.get_blob_client("azfuse_data/d/sub/b.bin").get_blob_properties(
        ).blob_tier == "Cool"


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_command_line(project, mounter, container):
    upload(container, {"azfuse_data/one.txt": b"first line\nsecond line\n",
                       **{f"azfuse_data/tree/{i}.txt": b"t" for i in range(5)}})
    mount = mounter.mount(project.config)
    assert project.cli("d", "data/one.txt").returncode == 0
    assert project.status(mount.mountpoint)["prefetched"]["files"] == 1

    listing = project.cli("ls", "data")
    assert listing.returncode == 0
    assert "size_in_bytes" in listing.stdout and "/one.txt" in listing.stdout

    assert project.cli("cat", "data/one.txt").stdout == "first line\nsecond line\n"
    assert project.cli("head", "data/one.txt").stdout == "first line\nsecond line\n"
    assert project.cli("tail", "data/one.txt").stdout == "first line\nsecond line\n"

    url = project.cli("url", "data/one.txt").stdout.strip()
    assert "/azfuse_data/one.txt?" in url and "sig=" in url
    with urllib.request.urlopen(url) as answer:  # noqa: S310 (the URL under test)
        assert answer.read() == b"first line\nsecond line\n"

    editor = project.root / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf 'edited\\n' > \"$1\"\n")
    editor.chmod(0o755)
    project.env["EDITOR"] = str(editor)
    assert project.cli("update", "data/new/notes.txt").returncode == 0

    assert project.cli("rm", "data/one.txt").returncode == 0
    assert project.cli("rmtree", "data/tree").returncode == 0
    assert {name: data for name, data in blobs(container, "azfuse_data/").items()
            if data} == {"azfuse_data/new/notes.txt": b"edited\n"}

    wrong = project.cli("rm", "data/missing.txt")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip() == ("blobmount.azfuse: rm data/missing.txt:"
                                    " No such file or directory")
    missing = project.cli("d", "data/missing.txt")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("blobmount.azfuse: data/missing.txt:"
                                      " no such file or folder")
    unknown = project.cli("cp", "a", "b")
    assert unknown.returncode == 2 and "not supported" in unknown.stderr
