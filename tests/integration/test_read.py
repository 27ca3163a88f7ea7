"""Reading through a real mount: what programs see must be what the container holds."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest

from .conftest import upload, wait_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def test_tree_three_folders_deep(mounter, container):
    blobs = {
        "top.txt": b"top level\n",
        "a/one.txt": b"one\n",
        "a/b/two.txt": b"two\n" * 1000,
        "a/b/c/three.bin": os.urandom(300_000),
        "x/y/z/leaf": b"",
    }
    upload(container, blobs)
    config = mounter.config([{"local": "data", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("data")
        assert sorted(os.listdir(mount.mountpoint)) == ["data"]
        assert sorted(os.listdir(root)) == ["a", "top.txt", "x"]
        found = subprocess.run(["find", str(root), "-type", "f"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert sorted(Path(p).relative_to(root).as_posix() for p in found) == sorted(blobs)
        for name, data in blobs.items():
            assert (root / name).read_bytes() == data
            assert (root / name).stat().st_size == len(data)
        digest = subprocess.run(["sha256sum", str(root / "a/b/c/three.bin")], check=True,
                                capture_output=True, text=True).stdout.split()[0]
        assert digest == hashlib.sha256(blobs["a/b/c/three.bin"]).hexdigest()
        listing = subprocess.run(["ls", "-l", str(root / "a/b")], capture_output=True,
                                 text=True, check=True).stdout
        assert "two.txt" in listing and str(len(blobs["a/b/two.txt"])) in listing
        assert (root / "a/b").is_dir() and (root / "a/b/c").is_dir()


def test_prefix_entries_side_by_side(mounter, service, container):
    upload(container, {"datasets/train.csv": b"x,y\n1,2\n", "models/m.bin": b"weights",
                       "outside.txt": b"not under either prefix"})
    name = container.container_name
    config = mounter.config([
        {"local": "datasets", "container": name, "remote": "datasets"},
        {"local": "nested/models", "container": name, "remote": "models/", "read_only": True},
        {"local": "whole", "container": name},
    ])
    with mounter.mounted(config) as mount:
        assert sorted(os.listdir(mount.mountpoint)) == ["datasets", "nested", "whole"]
        assert os.listdir(mount.path("datasets")) == ["train.csv"]
        assert mount.path("datasets/train.csv").read_bytes() == b"x,y\n1,2\n"
        assert mount.path("nested/models/m.bin").read_bytes() == b"weights"
        assert sorted(os.listdir(mount.path("whole"))) == ["datasets", "models", "outside.txt"]
        assert mount.path("nested/models/m.bin").stat().st_mode & 0o222 == 0


@pytest.mark.slow
def test_folder_of_5000_blobs_lists_completely_in_order(mounter, container):
    names = [f"f{i:05d}-{random.randrange(10**6)}.txt" for i in range(5000)]
    upload(container, {f"big/{name}": name.encode() for name in names}, workers=32)
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        listing = subprocess.run(["ls", "-1", "-f", str(mount.path("d/big"))], check=True,
                                 capture_output=True, text=True).stdout.split("\n")
        shown = [name for name in listing if name and name not in (".", "..")]
        assert shown == sorted(names)  # complete, no duplicates, in order
        sizes = {entry.name: entry.stat().st_size for entry in os.scandir(mount.path("d/big"))}
        assert sizes == {name: len(name) for name in names}
        assert mount.path(f"d/big/{names[4321]}").read_text() == names[4321]


@pytest.mark.parametrize("through", ["ranges", "azcopy"])
def test_large_blob_random_seeks_then_whole(mounter, container, through):
    data = os.urandom(64 * MiB)
    container.upload_blob("big.bin", data, max_concurrency=8)
    # Up to sdk_download_max, SDK ranges, readable while they arrive (so the seeks below
    # land on bytes not all there yet); above it, an AzCopy job, waited for at open.
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            sdk_download_max="1MiB" if through == "azcopy" else "1GiB")
    with mounter.mounted(config) as mount:
        path = mount.path("d/big.bin")
        rng = random.Random(7)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(200):
                offset = rng.randrange(len(data))
                length = rng.randrange(1, 256 * 1024)
                assert os.pread(fd, length, offset) == data[offset:offset + length]
            assert os.pread(fd, 100, len(data) - 10) == data[-10:]
            assert os.pread(fd, 100, len(data) + 5) == b""
        finally:
            os.close(fd)
        with open(path, "rb") as reader:
            whole = reader.read()
        assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()
        with open(path, "rb") as reader, mmap.mmap(reader.fileno(), 0,
                                                   access=mmap.ACCESS_READ) as mapped:
            assert mapped[12345:12345 + 4096] == data[12345:12345 + 4096]
            assert mapped[-4096:] == data[-4096:]
        status = mount.status()
        assert status["downloads"]["by_path"] == {"d/big.bin": 1}
        assert status["azcopy_jobs"] == (1 if through == "azcopy" else 0)
        assert not list((mounter.tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.parametrize(("size", "sdk_max"), [(200_000, "1MiB"), (8 * MiB, "1MiB"),
                                             (24 * MiB, "1GiB")],
                         ids=["one GET", "AzCopy", "ranges"])
def test_eight_readers_of_one_cold_blob_share_one_download(mounter, container, size,
                                                           sdk_max):
    data = os.urandom(size)
    container.upload_blob("shared.bin", data)
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            sdk_download_max=sdk_max)
    with mounter.mounted(config) as mount:
        os.listdir(mount.path("d"))  # list first, so the readers race on the open only
        results: list[bytes | BaseException] = [b""] * 8
        barrier = threading.Barrier(8)

        def read(index: int) -> None:
            try:
                barrier.wait()
                results[index] = mount.path("d/shared.bin").read_bytes()
            except BaseException as exc:
                results[index] = exc

        threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert all(result == data for result in results)
        assert mount.status()["downloads"] == {"total": 1, "by_path": {"d/shared.bin": 1}}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may set a device's read-ahead")
@pytest.mark.parametrize(("setting", "expected"), [(None, "1024"), (256, "256")])
def test_the_kernel_reads_ahead_as_far_as_read_ahead_kb_says(mounter, container, setting,
                                                             expected):
    extra = {} if setting is None else {"read_ahead_kb": setting}
    with mounter.mounted(mounter.config(
       [{"local": "d", "container": container.container_name}], **extra)) as mount:
        device = os.stat(mount.mountpoint).st_dev
        read_ahead = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}"
                          "/read_ahead_kb")
        # Set beside the first requests, just after the mount is ready.
        wait_for(lambda: read_ahead.read_text().strip() == expected, timeout=10,
                 what=f"read_ahead_kb {expected}")


def test_remount_reuses_the_cache_without_downloading(mounter, container):
    blobs = {"a.txt": b"alpha" * 100, "sub/b.bin": os.urandom(3 * MiB)}
    upload(container, blobs)
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            sdk_download_max="1MiB")
    with mounter.mounted(config) as mount:
        for name, data in blobs.items():
            assert mount.path(f"d/{name}").read_bytes() == data
        assert mount.status()["downloads"]["total"] == 2
    with mounter.mounted(config) as mount:
        for name, data in blobs.items():
            assert mount.path(f"d/{name}").read_bytes() == data
        status = mount.status()
        assert status["downloads"]["total"] == 0
        assert status["cache_bytes"] == sum(len(data) for data in blobs.values())


def test_blob_changed_behind_the_mounts_back(mounter, container):
    container.upload_blob("news.txt", b"old news")
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            listing_ttl=1)
    with mounter.mounted(config) as mount:
        path = mount.path("d/news.txt")
        assert path.read_bytes() == b"old news"
        container.upload_blob("news.txt", b"fresh news, and longer", overwrite=True)
        container.upload_blob("added.txt", b"new file")
        wait_for(lambda: path.read_bytes() == b"fresh news, and longer", timeout=20,
                 what="the new content to show")
        wait_for(lambda: "added.txt" in os.listdir(mount.path("d")), timeout=20,
                 what="the new blob to show")
        container.delete_blob("added.txt")
        wait_for(lambda: "added.txt" not in os.listdir(mount.path("d")), timeout=20,
                 what="the deleted blob to go")
        assert mount.status()["downloads"]["by_path"]["d/news.txt"] == 2


def test_posix_errors_and_markers(mounter, container):
    upload(container, {"file.txt": b"data", "dir/inner.txt": b"inner"})
    container.upload_blob("empty", b"", metadata={"hdi_isfolder": "true"})
    container.upload_blob("dir/marked", b"", metadata={"hdi_isfolder": "true"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        assert sorted(os.listdir(root)) == ["dir", "empty", "file.txt"]
        assert (root / "empty").is_dir() and os.listdir(root / "empty") == []
        assert (root / "dir/marked").is_dir()
        cases = [
            (lambda: (root / "missing.txt").read_bytes(), errno.ENOENT),
            (lambda: os.stat(root / "dir/nope"), errno.ENOENT),
            (lambda: (root / "dir").read_bytes(), errno.EISDIR),
            (lambda: os.listdir(root / "file.txt"), errno.ENOTDIR),
            (lambda: os.stat(root / "file.txt/x"), errno.ENOTDIR),
        ]
        for action, expected in cases:
            with pytest.raises(OSError) as caught:
                action()
            assert caught.value.errno == expected, caught.value
        with open(root / "file.txt", "rb") as reader:
            reader.seek(2)
            assert reader.read(1) == b"t"
            assert reader.read() == b"a"


def test_missing_blob_at_open_gives_enoent_and_no_partial_file(mounter, container):
    container.upload_blob("vanishing.txt", b"soon gone")
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            listing_ttl=0)
    with mounter.mounted(config) as mount:
        assert "vanishing.txt" in os.listdir(mount.path("d"))
        container.delete_blob("vanishing.txt")
        with pytest.raises(OSError) as caught:
            mount.path("d/vanishing.txt").read_bytes()
        assert caught.value.errno == errno.ENOENT
        assert not [p for p in (mounter.tmp_path / "cache").rglob("*") if p.is_file()
                    and "blobs" in p.parts]


def test_walking_a_folder_of_small_files_reads_ahead(mounter, container):
    files = {f"s{i:03d}.txt": f"small file {i}\n".encode() for i in range(40)}
    upload(container, {f"walk/{name}": data for name, data in files.items()})
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            read_ahead_files=8)
    with mounter.mounted(config) as mount:
        names = sorted(os.listdir(mount.path("d/walk")))
        # One cold open, then another that skips files, guess nothing; the open of
        # the next neighbour starts a walk, which fetches the next file in the
        # background, and each open of a file fetched ahead doubles how many are...
        for name in (names[0], names[5], names[6]):
            assert mount.path(f"d/walk/{name}").read_bytes() == files[name]
        ahead = {f"d/walk/{name}": 1 for name in [names[0], *names[5:8]]}
        wait_for(lambda: mount.status()["downloads"]["by_path"] == ahead, timeout=20,
                 what="the next file to be read ahead")
        assert mount.path(f"d/walk/{names[7]}").read_bytes() == files[names[7]]
        ahead = {f"d/walk/{name}": 1 for name in [names[0], *names[5:10]]}
        wait_for(lambda: mount.status()["downloads"]["by_path"] == ahead, timeout=20,
                 what="the next two files to be read ahead")
        # ... and no further, until the program goes on.
        for name in names:
            assert mount.path(f"d/walk/{name}").read_bytes() == files[name]
        by_path = mount.status()["downloads"]["by_path"]
        assert by_path == {f"d/walk/{name}": 1 for name in names}  # each file once
