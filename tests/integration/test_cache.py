"""Managing a live mount's cache: prefetch, limits and eviction, cache ls/evict/clear,
stats, statfs, and copies on /dev/shm dropped once uploaded."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from blobmount import Client
from blobmount.config import AZURITE_ACCOUNT

from .conftest import blobmount, upload, wait_for

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB


def cache_file(mounter, local: str, container: str, blob: str) -> Path:
    """Where the mount keeps its copy of a blob (the layout cache.py documents)."""
    digest = hashlib.sha256(f"{AZURITE_ACCOUNT}/{container}/{blob}".encode()).hexdigest()
    return mounter.tmp_path / "cache" / local / "blobs" / digest[:2] / digest


def folder_bytes(mounter, local: str) -> int:
    """Bytes in an entry's cache folder, as the disk has them."""
    blobs = mounter.tmp_path / "cache" / local / "blobs"
    return sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else 0


def test_prefetch_one_job_per_entry_then_no_downloads(mounter, container):
    small = {f"set/small/{i:03d}.txt": f"small file {i}\n".encode() * 40 for i in range(300)}
    large = {f"set/large/{i}.bin": os.urandom(6 * MiB) for i in range(3)}
    other = {f"o{i}.txt": f"other {i}".encode() for i in range(12)}
    upload(container, {**small, **large}, workers=32)
    upload(container, {f"elsewhere/{name}": data for name, data in other.items()})
    name = container.container_name
    # Reading a large blob alone would take an AzCopy job of its own.
    config = mounter.config([{"local": "d", "container": name, "remote": "set"},
                             {"local": "e", "container": name, "remote": "elsewhere"}],
                            sdk_download_max="1MiB")
    with mounter.mounted(config) as mount:
        before = mount.status()
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "blobmount", "prefetch", str(mount.path("d")),
             "--from-file", "-"], input=f"{mount.path('e')}\n", capture_output=True, text=True,
            timeout=120)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # not a terminal: no progress bar
        assert "315 files" in result.stdout and "by 2 AzCopy jobs" in result.stdout
        after = mount.status()
        assert after["azcopy_jobs"] - before["azcopy_jobs"] == 2  # one per entry
        assert after["prefetched"]["files"] == 315
        downloads = after["downloads"]
        assert downloads["total"] == 315
        assert set(downloads["by_path"].values()) == {1}
        # Everything is cached: reading it all downloads nothing more.
        for blob, data in {**small, **large}.items():
            assert mount.path("d/" + blob[len("set/"):]).read_bytes() == data
        for blob, data in other.items():
            assert mount.path(f"e/{blob}").read_bytes() == data
        final = mount.status()
        assert final["downloads"] == downloads
        assert final["azcopy_jobs"] == after["azcopy_jobs"]
        # Again: nothing to do, no job.
        again = Client(mount.mountpoint).prefetch(["d", "e"])
        assert (again["downloaded"], again["cached"], again["azcopy_jobs"]) == (0, 315, 0)
        assert not list((mounter.tmp_path / "cache").rglob("staging/*"))
        print(f"prefetch of 315 files (18 MiB) took {elapsed:.1f} s")


def test_prefetch_failures_progress_and_the_python_api(mounter, container):
    upload(container, {f"p/{i}.bin": os.urandom(300 * KiB) for i in range(20)})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        missing = blobmount("prefetch", str(mount.path("d/p")), str(mount.path("d/nope")),
                            str(mounter.tmp_path))
        # Each failure named; what could be done is done all the same.
        assert missing.returncode == 1
        assert "cannot prefetch d/nope: d/nope: no such file or folder" in missing.stderr
        assert f"{mounter.tmp_path}: not under a blobmount mount point" in missing.stderr
        assert mount.status()["prefetched"]["files"] == 20
        # On a terminal, a progress bar: files, bytes, rate.
        container.upload_blob("p/late.bin", os.urandom(2 * MiB))
        controller, terminal = pty.openpty()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "blobmount", "prefetch", str(mount.path("d"))],
                stdout=subprocess.PIPE, stderr=terminal, text=True)
            os.close(terminal)
            drawn = b""
            while process.poll() is None or select.select([controller], [], [], 0.2)[0]:
                if select.select([controller], [], [], 0.2)[0]:
                    try:
                        drawn += os.read(controller, 4096)
                    except OSError:
                        break
            assert process.wait(timeout=60) == 0
        finally:
            os.close(controller)
        text = drawn.decode(errors="replace")
        assert "\r[" in text and "21/21 files" in text and "MiB" in text, text
        # The Python API, with relative and absolute paths.
        client = Client(mount.mountpoint)
        done = client.prefetch([mount.path("d/p/late.bin"), "d/p"])
        assert (done["downloaded"], done["cached"]) == (0, 21)
        with pytest.raises(Exception, match="no such file or folder"):
            client.prefetch(["d/absent"])
        assert client.status()["pid"] == mount.pid
        assert client.sync() == []


def test_prefetch_of_files_named_one_by_one_in_a_folder(mounter, container):
    """Named one by one, siblings are found by one listing of their folder; a folder
    among them is expanded, a blob hidden by a folder of the same name is the folder,
    and a name that is not there fails alone."""
    upload(container, {"s/a.txt": b"a", "s/b.txt": b"b", "s/sub/c.txt": b"c",
                       "s/both": b"hidden", "s/both/d.txt": b"d"})
    mount = mounter.mount(mounter.config([{"local": "d", "container": container.container_name}]))
    try:
        result = Client(mount.mountpoint).prefetch(
            ["d/s/a.txt", "d/s/b.txt", "d/s/sub", "d/s/both", "d/s/nope.txt"], check=False)
        assert result["failed"] == [{"path": "d/s/nope.txt",
                                     "error": "d/s/nope.txt: no such file or folder"}]
        assert (result["files"], result["downloaded"]) == (4, 4)
        assert sorted(mount.status()["downloads"]["by_path"]) == [
            "d/s/a.txt", "d/s/b.txt", "d/s/both/d.txt", "d/s/sub/c.txt"]
    except BaseException:
        mounter.cleanup()
        raise
    else:
        mounter.unmount(mount)


def test_eviction_keeps_the_folder_under_its_limit_and_never_drops_a_dirty_file(
        mounter, container):
    files = {f"f{i:02d}.bin": os.urandom(200 * KiB) for i in range(20)}
    upload(container, files)
    limit = 1 * MiB
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "cache_max_bytes": limit}])
    with mounter.mounted(config) as mount:
        dirty = b"written here, not closed yet" * 10_000  # ~280 KB
        writer = open(mount.path("d/dirty.bin"), "wb")  # noqa: SIM115
        try:
            writer.write(dirty)
            writer.flush()
            highest = 0
            for _ in range(2):
                for name, data in files.items():
                    assert mount.path(f"d/{name}").read_bytes() == data
                    highest = max(highest, folder_bytes(mounter, "d"))
                    # Eviction follows each download at once.
                    wait_for(lambda: folder_bytes(mounter, "d") <= limit, timeout=5,
                             what="the cache folder to shrink under its limit")
            # Above the limit at most by the file just downloaded, never for long.
            assert highest <= limit + 200 * KiB
            copy = cache_file(mounter, "d", container.container_name, "dirty.bin")
            assert copy.read_bytes() == dirty
        finally:
            writer.close()
        wait_for(lambda: container.get_blob_client("dirty.bin").exists(), timeout=20,
                 what="the written file to be uploaded")
        assert container.download_blob("dirty.bin").readall() == dirty
        status = mount.status()
        assert status["evicted"]["files"] >= 20
        assert status["cache"][0]["max_bytes"] == limit


def test_files_unused_for_max_age_are_evicted(mounter, container):
    upload(container, {"old.txt": b"old" * 100, "kept.txt": b"kept"})
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            cache_max_age=2)
    with mounter.mounted(config) as mount:
        assert mount.path("d/old.txt").read_bytes() == b"old" * 100
        copy = cache_file(mounter, "d", container.container_name, "old.txt")
        assert copy.exists()
        wait_for(lambda: not copy.exists(), timeout=10, what="the unused copy to go")
        assert mount.path("d/old.txt").read_bytes() == b"old" * 100
        assert mount.status()["downloads"]["by_path"]["d/old.txt"] == 2


def test_cache_ls_evict_and_clear_on_a_live_mount(mounter, container):
    upload(container, {"a.txt": b"alpha", "sub/b.txt": b"beta" * 10, "sub/c.txt": b"gamma"})
    name = container.container_name
    # Async uploads wait a minute before going: a closed file stays pending here.
    # Downloads are counted exactly here: no read-ahead of neighbours.
    config = mounter.config([{"local": "d", "container": name, "upload": "async"}],
                            upload_batch_window=60, read_ahead_files=0)
    with mounter.mounted(config) as mount:
        for path in ("d/a.txt", "d/sub/b.txt", "d/sub/c.txt"):
            mount.path(path).read_bytes()
        mount.path("d/pending.txt").write_bytes(b"closed, not uploaded")
        writer = open(mount.path("d/open.txt"), "wb")  # noqa: SIM115
        try:
            writer.write(b"still being written")
            writer.flush()
            listing = blobmount("cache", "ls", str(mount.path("d")), check=True).stdout
            states = {line.split()[-1]: line.split()[0] for line in listing.splitlines()}
            assert states == {"d/a.txt": "clean", "d/sub/b.txt": "clean",
                              "d/sub/c.txt": "clean", "d/pending.txt": "pending",
                              "d/open.txt": "dirty"}, listing
            sizes = {item["path"]: item["size"] for item in json.loads(blobmount(
                "cache", "ls", str(mount.path("d/sub")), "--json", check=True).stdout)}
            assert sizes == {"d/sub/b.txt": 40, "d/sub/c.txt": 5}

            evicted = blobmount("cache", "evict", str(mount.path("d/sub/b.txt")),
                                str(mount.path("d/pending.txt")))
            assert evicted.returncode == 1
            assert "kept d/pending.txt: not uploaded yet" in evicted.stderr
            assert "dropped 1 cached files" in evicted.stdout
            assert not cache_file(mounter, "d", name, "sub/b.txt").exists()
            assert cache_file(mounter, "d", name, "pending.txt").exists()
            assert not container.get_blob_client("pending.txt").exists()

            forced = blobmount("cache", "evict", "--force", str(mount.path("d/pending.txt")))
            assert forced.returncode == 0, forced.stderr
            assert container.download_blob("pending.txt").readall() == b"closed, not uploaded"
            assert not cache_file(mounter, "d", name, "pending.txt").exists()

            cleared = blobmount("cache", "clear", str(mount.mountpoint), "--force")
            assert cleared.returncode == 1  # the open file stays, even forced
            assert "kept d/open.txt: open for writing" in cleared.stderr
            left = json.loads(blobmount("cache", "ls", str(mount.mountpoint), "--json",
                                        check=True).stdout)
            assert [item["path"] for item in left] == ["d/open.txt"]
        finally:
            writer.close()
        # Dropped copies come back on the next open.
        before = mount.status()["downloads"]["total"]
        assert mount.path("d/sub/b.txt").read_bytes() == b"beta" * 10
        assert mount.path("d/pending.txt").read_bytes() == b"closed, not uploaded"
        assert mount.status()["downloads"]["total"] == before + 2
        Client(mount.mountpoint).sync()


def test_a_cache_file_deleted_by_hand_is_downloaded_again(mounter, container):
    container.upload_blob("doc.txt", b"the document")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        assert mount.path("d/doc.txt").read_bytes() == b"the document"
        copy = cache_file(mounter, "d", container.container_name, "doc.txt")
        copy.unlink()
        assert mount.path("d/doc.txt").read_bytes() == b"the document"
        assert copy.read_bytes() == b"the document"
        assert mount.status()["downloads"]["by_path"] == {"d/doc.txt": 2}


def test_stats_match_what_the_sdk_lists(mounter, container):
    blobs = {"x/1.bin": os.urandom(1000), "x/deep/2.bin": os.urandom(5000),
             "y/3.bin": os.urandom(7), "top.bin": os.urandom(300)}
    upload(container, blobs)
    container.upload_blob("x/empty", b"", metadata={"hdi_isfolder": "true"})
    name = container.container_name
    config = mounter.config([{"local": "all", "container": name},
                             {"local": "nested/x", "container": name, "remote": "x"}],
                            cache_max_bytes="10MiB")
    with mounter.mounted(config) as mount:
        mount.path("all/x/deep/2.bin").read_bytes()
        rows = {row["path"]: row for row in json.loads(blobmount(
            "stats", str(mount.mountpoint), "--json", check=True).stdout)}
        sdk = [b for b in container.list_blobs(include=["metadata"])
               if (b.metadata or {}).get("hdi_isfolder") != "true"]
        assert rows["all"]["files"] == len(sdk) == 4
        assert rows["all"]["bytes"] == sum(b.size for b in sdk)
        assert rows["all"]["cached_bytes"] == 5000
        under_x = [b for b in sdk if b.name.startswith("x/")]
        assert (rows["nested/x"]["files"], rows["nested/x"]["bytes"]) == (
            len(under_x), sum(b.size for b in under_x))
        assert rows["nested/x"]["cached_bytes"] == 0  # a cache folder of its own
        assert all(row["pending_uploads"] == 0 for row in rows.values())
        folder = json.loads(blobmount("stats", str(mount.path("all/x/deep")), "--json",
                                      check=True).stdout)
        assert [(r["path"], r["files"], r["bytes"], r["cached_bytes"]) for r in folder] == [
            ("all/x/deep", 1, 5000, 5000)]
        table = blobmount("stats", str(mount.path("nested")), check=True).stdout
        assert table.splitlines()[1].split() == [str(len(under_x)),
                                                 str(sum(b.size for b in under_x)), "0", "0",
                                                 "nested/x"]
        # df: the size is the cache limits, the use what the caches hold.
        fs = os.statvfs(mount.mountpoint)
        assert fs.f_blocks * fs.f_frsize == 20 * MiB
        assert fs.f_blocks - fs.f_bfree == 2  # 5000 bytes, in 4 KiB blocks rounded up


def test_copies_on_dev_shm_go_once_uploaded(mounter, container):
    shm = Path("/dev/shm") / f"blobmount-test-{uuid.uuid4().hex[:8]}"
    container.upload_blob("read.txt", b"read, so kept")
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "cache": str(shm)}])
    try:
        with mounter.mounted(config) as mount:
            assert mount.status()["cache"][0]["drop_after_upload"] is True
            mount.path("d/new.txt").write_bytes(b"written to memory")
            assert container.download_blob("new.txt").readall() == b"written to memory"
            digest = hashlib.sha256(
                f"{AZURITE_ACCOUNT}/{container.container_name}/new.txt".encode()).hexdigest()
            copy = shm / "blobs" / digest[:2] / digest
            wait_for(lambda: not copy.exists(), timeout=10, what="the uploaded copy to go")
            assert mount.path("d/read.txt").read_bytes() == b"read, so kept"
            assert mount.path("d/new.txt").read_bytes() == b"written to memory"
            assert Client(mount.mountpoint).cache_ls("d/read.txt")[0]["state"] == "clean"
    finally:
        shutil.rmtree(shm, ignore_errors=True)
