"""Writing through a real mount: what the container holds afterwards is the truth."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest

from .conftest import blobmount, upload, wait_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def blob(container, name: str) -> bytes:
    return container.download_blob(name).readall()


def blobs(container, prefix: str = "") -> dict[str, bytes]:
    """Every blob under `prefix` (folder markers included) and its bytes."""
    return {item.name: blob(container, item.name)
            for item in container.list_blobs(name_starts_with=prefix or None)}


def names(container, prefix: str = "") -> set[str]:
    return {item.name for item in container.list_blobs(name_starts_with=prefix or None)}


def is_marker(container, name: str) -> bool:
    props = container.get_blob_client(name).get_blob_properties()
    return props.size == 0 and (props.metadata or {}).get("hdi_isfolder") == "true"


def errno_of(action) -> int:
    with pytest.raises(OSError) as caught:
        action()
    return caught.value.errno


def open_and_close(path: Path, mode: str) -> None:
    with open(path, mode):
        pass


def downloads(mount) -> int:
    return mount.status()["downloads"]["total"]


def downloaded(mount, path: str) -> int:
    """Downloads of one file (its path under the mount point) since the mount."""
    return mount.status()["downloads"]["by_path"].get(path, 0)


def test_create_write_read_back_and_overwrite(mounter, container):
    container.upload_blob("old.txt", b"0123456789")
    container.upload_blob("replaced.txt", b"the old content, longer than the new")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        # O_TRUNC replaces a blob whole: nothing to download. (First, before any open
        # for reading makes the folder's read-ahead fetch it.)
        (root / "replaced.txt").write_bytes(b"new")
        assert blob(container, "replaced.txt") == b"new"
        assert downloaded(mount, "d/replaced.txt") == 0
        assert (root / "replaced.txt").read_bytes() == b"new"

        data = os.urandom(300_000)
        (root / "new.bin").write_bytes(data)
        # Sync mode: close() returned, so the container has exactly these bytes.
        assert blob(container, "new.bin") == data
        assert (root / "new.bin").read_bytes() == data
        assert (root / "new.bin").stat().st_size == len(data)
        assert "new.bin" in os.listdir(root)

        # Overwriting part of an existing blob downloads it first (once, whether the
        # open or the read-ahead did).
        with open(root / "old.txt", "r+b") as writer:
            writer.seek(3)
            writer.write(b"abc")
        assert blob(container, "old.txt") == b"012abc6789"
        assert downloaded(mount, "d/old.txt") == 1
        assert (root / "old.txt").read_bytes() == b"012abc6789"

        # An empty file is a zero-length blob, not a folder.
        (root / "empty").touch()
        assert blob(container, "empty") == b""
        assert not is_marker(container, "empty")
        assert (root / "empty").is_file()


def test_append_truncate_and_ftruncate(mounter, container):
    container.upload_blob("log.txt", b"line 1\n")
    container.upload_blob("shrink.bin", bytes(range(256)) * 4)
    container.upload_blob("cut.txt", b"cut me to nothing")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        with open(root / "log.txt", "ab") as writer:  # O_APPEND on an uncached blob
            writer.write(b"line 2\n")
        with open(root / "log.txt", "ab") as writer:
            writer.write(b"line 3\n")
        assert blob(container, "log.txt") == b"line 1\nline 2\nline 3\n"
        assert (root / "log.txt").read_bytes() == b"line 1\nline 2\nline 3\n"

        os.truncate(root / "shrink.bin", 100)  # truncate(2) of an uncached blob
        assert blob(container, "shrink.bin") == bytes(range(100))
        os.truncate(root / "shrink.bin", 120)  # growing pads with zeros
        assert blob(container, "shrink.bin") == bytes(range(100)) + bytes(20)
        assert (root / "shrink.bin").stat().st_size == 120

        os.truncate(root / "cut.txt", 0)
        assert blob(container, "cut.txt") == b""

        fd = os.open(root / "fresh.txt", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.write(fd, b"hello, world")
            os.ftruncate(fd, 5)
            assert os.fstat(fd).st_size == 5
            os.write(fd, b"!")  # the offset is past the end: a hole of zeros
        finally:
            os.close(fd)
        assert blob(container, "fresh.txt") == b"hello" + bytes(7) + b"!"
        assert (root / "fresh.txt").read_bytes() == b"hello" + bytes(7) + b"!"


def test_fsync_uploads_before_close(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        with open(mount.path("d/journal.txt"), "wb") as writer:
            writer.write(b"first part\n")
            writer.flush()
            os.fsync(writer.fileno())
            assert blob(container, "journal.txt") == b"first part\n"
            writer.write(b"second part\n")
        assert blob(container, "journal.txt") == b"first part\nsecond part\n"


def test_large_files_upload_through_azcopy(mounter, container):
    container.upload_blob("big.bin", os.urandom(3 * MiB))
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            sdk_upload_max="1MiB")
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        data = os.urandom(3 * MiB + 123)
        (root / "new.bin").write_bytes(data)
        assert blob(container, "new.bin") == data
        written = (root / "new.bin").stat().st_mtime_ns
        assert mtime_metadata(container, "new.bin") is not None
        with open(root / "big.bin", "r+b") as writer:  # a change to a blob that exists
            writer.seek(MiB)
            writer.write(b"changed here")
        changed = blob(container, "big.bin")
        assert changed[MiB:MiB + 12] == b"changed here" and len(changed) == 3 * MiB
        assert mount.status()["azcopy_jobs"] == 2  # one upload job each
    with mounter.mounted(config) as mount:
        assert mount.path("d/new.bin").stat().st_mtime_ns == written


def test_replacing_a_file_while_it_downloads_keeps_the_new_bytes(mounter, container):
    old = os.urandom(2 * MiB)
    container.upload_blob("big.bin", old)
    # By AzCopy, so the download is still under way (2 s at least) when the writer comes;
    # async, and held until `sync`, so the upload comes after the download ends.
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}], sdk_download_max="1MiB",
                            upload_batch_window=600)
    with mounter.mounted(config) as mount:
        path = mount.path("d/big.bin")
        os.listdir(mount.path("d"))
        read: list[bytes] = []
        reader = threading.Thread(target=lambda: read.append(path.read_bytes()))
        reader.start()
        try:
            wait_for(lambda: downloaded(mount, "d/big.bin") == 1, what="the download to start")
            path.write_bytes(b"new bytes")  # O_TRUNC while the download may still run
        finally:
            reader.join(timeout=120)
        # The reader shares the file with the writer, as on a local disk: it may see the
        # old bytes, the new ones, or the old ones cut short by the truncation.
        assert read and read[0] in (old[:len(read[0])], b"new bytes")
        blobmount("sync", str(mount.mountpoint), check=True)
        assert blob(container, "big.bin") == b"new bytes"
        assert path.read_bytes() == b"new bytes"


def test_unlink_mkdir_rmdir(mounter, container):
    upload(container, {"gone.txt": b"x", "full/inner.txt": b"y", "virtual/only.txt": b"z"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        os.unlink(root / "gone.txt")
        assert "gone.txt" not in names(container)
        assert not (root / "gone.txt").exists()

        os.mkdir(root / "made")
        assert is_marker(container, "made")
        assert (root / "made").is_dir() and os.listdir(root / "made") == []
        os.makedirs(root / "made/deeper/deepest")
        assert is_marker(container, "made/deeper") and is_marker(container, "made/deeper/deepest")
        (root / "made/deeper/deepest/f.txt").write_bytes(b"leaf")
        assert blob(container, "made/deeper/deepest/f.txt") == b"leaf"

        assert errno_of(lambda: os.rmdir(root / "made/deeper")) == errno.ENOTEMPTY
        assert errno_of(lambda: os.rmdir(root / "full")) == errno.ENOTEMPTY
        os.unlink(root / "made/deeper/deepest/f.txt")
        os.rmdir(root / "made/deeper/deepest")
        os.rmdir(root / "made/deeper")
        assert names(container, "made") == {"made"}
        os.rmdir(root / "made")
        assert not (root / "made").exists()
        assert names(container, "made") == set()

        # A folder that is only a prefix has no marker to delete.
        os.unlink(root / "virtual/only.txt")
        os.rmdir(root / "virtual")
        assert names(container) == {"full/inner.txt"}
        assert sorted(os.listdir(root)) == ["full"]


def test_errors_are_those_of_a_local_filesystem(mounter, container):
    upload(container, {"file.txt": b"data", "dir/inner.txt": b"inner"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        long_name = "n" * 256
        cases = [
            (lambda: os.mkdir(root / "dir"), errno.EEXIST),
            (lambda: os.mkdir(root / "file.txt"), errno.EEXIST),
            (lambda: os.open(root / "file.txt", os.O_CREAT | os.O_EXCL | os.O_WRONLY),
             errno.EEXIST),
            (lambda: os.unlink(root / "missing"), errno.ENOENT),
            (lambda: os.rmdir(root / "missing"), errno.ENOENT),
            (lambda: os.rename(root / "missing", root / "other"), errno.ENOENT),
            (lambda: os.mkdir(root / "missing/sub"), errno.ENOENT),
            (lambda: open_and_close(root / "missing/new.txt", "wb"), errno.ENOENT),
            (lambda: os.rmdir(root / "file.txt"), errno.ENOTDIR),
            (lambda: open_and_close(root / "file.txt/new.txt", "wb"), errno.ENOTDIR),
            (lambda: os.mkdir(root / "file.txt/sub"), errno.ENOTDIR),
            (lambda: os.rename(root / "dir", root / "file.txt"), errno.ENOTDIR),
            (lambda: os.unlink(root / "dir"), errno.EISDIR),
            (lambda: open_and_close(root / "dir", "wb"), errno.EISDIR),
            (lambda: os.rename(root / "file.txt", root / "dir"), errno.EISDIR),
            (lambda: os.rmdir(root / "dir"), errno.ENOTEMPTY),
            (lambda: open_and_close(root / long_name, "wb"), errno.ENAMETOOLONG),
            (lambda: os.mkdir(root / long_name), errno.ENAMETOOLONG),
            (lambda: os.stat(root / long_name), errno.ENAMETOOLONG),
            (lambda: os.rename(root / "file.txt", root / long_name), errno.ENAMETOOLONG),
            (lambda: os.rename(root / "dir", root / "dir/inside"), errno.EINVAL),
            # The mount table's own folders are not the container's.
            (lambda: os.mkdir(mount.path("elsewhere")), errno.EACCES),
            (lambda: open_and_close(mount.path("new.txt"), "wb"), errno.EACCES),
            (lambda: os.rmdir(root), errno.EACCES),
            (lambda: os.rename(root, mount.path("renamed")), errno.EACCES),
        ]
        for number, (action, expected) in enumerate(cases):
            assert errno_of(action) == expected, f"case {number}"
        assert names(container) == {"file.txt", "dir/inner.txt"}
        assert (root / "file.txt").read_bytes() == b"data"


def test_read_only_entry_refuses_every_change(mounter, container):
    upload(container, {"file.txt": b"data", "dir/inner.txt": b"inner"})
    container.upload_blob("empty", b"", metadata={"hdi_isfolder": "true"})
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "read_only": True}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        cases = [
            lambda: open_and_close(root / "new.txt", "wb"),
            lambda: open_and_close(root / "file.txt", "r+b"),
            lambda: open_and_close(root / "file.txt", "ab"),
            lambda: open_and_close(root / "file.txt", "wb"),
            lambda: os.truncate(root / "file.txt", 1),
            lambda: os.mkdir(root / "sub"),
            lambda: os.rmdir(root / "empty"),
            lambda: os.unlink(root / "file.txt"),
            lambda: os.rename(root / "file.txt", root / "moved.txt"),
            lambda: os.rename(root / "dir", root / "moved"),
            lambda: os.utime(root / "file.txt", (1, 1)),
            lambda: os.chmod(root / "file.txt", 0o600),
        ]
        for number, action in enumerate(cases):
            assert errno_of(action) == errno.EROFS, f"case {number}"
        assert blobs(container) == {"file.txt": b"data", "dir/inner.txt": b"inner",
                                    "empty": b""}


def test_rename_files_and_folders(mounter, container):
    upload(container, {"a.txt": b"alpha", "b.txt": b"beta", "target.txt": b"to be replaced",
                       "tree/one.txt": b"1", "tree/sub/two.txt": b"2", "tree/sub/deep/3": b"3",
                       "keep/x.txt": b"x"})
    container.upload_blob("tree/sub/empty", b"", metadata={"hdi_isfolder": "true"})
    container.upload_blob("emptydir", b"", metadata={"hdi_isfolder": "true"})
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        os.rename(root / "a.txt", root / "renamed.txt")
        assert blob(container, "renamed.txt") == b"alpha"
        assert "a.txt" not in names(container)
        assert (root / "renamed.txt").read_bytes() == b"alpha"
        assert not (root / "a.txt").exists()

        os.rename(root / "b.txt", root / "target.txt")  # replaces an existing file
        assert blob(container, "target.txt") == b"beta"
        assert "b.txt" not in names(container)
        assert (root / "target.txt").read_bytes() == b"beta"

        os.rename(root / "renamed.txt", root / "keep/moved.txt")  # into another folder
        assert blob(container, "keep/moved.txt") == b"alpha"
        assert sorted(os.listdir(root / "keep")) == ["moved.txt", "x.txt"]

        # A file written here and renamed at once.
        (root / "fresh.txt").write_bytes(b"fresh")
        os.rename(root / "fresh.txt", root / "fresher.txt")
        assert blob(container, "fresher.txt") == b"fresh"
        assert "fresh.txt" not in names(container)

        os.rename(root / "tree", root / "keep/forest")  # a whole folder
        assert blobs(container, "keep/forest") == {
            "keep/forest": b"", "keep/forest/one.txt": b"1", "keep/forest/sub/two.txt": b"2",
            "keep/forest/sub/deep/3": b"3", "keep/forest/sub/empty": b""}
        assert is_marker(container, "keep/forest/sub/empty")
        assert names(container, "tree") == set()
        assert (root / "keep/forest/sub/deep/3").read_bytes() == b"3"
        assert sorted(os.listdir(root / "keep/forest/sub")) == ["deep", "empty", "two.txt"]
        assert not (root / "tree").exists()

        os.rename(root / "keep/forest", root / "emptydir")  # onto an empty folder
        assert is_marker(container, "emptydir")
        assert blob(container, "emptydir/sub/two.txt") == b"2"
        assert names(container, "keep/forest") == set()
        assert (root / "emptydir/one.txt").read_bytes() == b"1"


def mtime_metadata(container, name: str) -> str | None:
    return (container.get_blob_client(name).get_blob_properties().metadata or {}).get("mtime")


def test_utimens_is_kept_as_blob_metadata(mounter, container):
    container.upload_blob("old.txt", b"made elsewhere")
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            listing_ttl=0)
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        when = 1_500_000_000_123_456_789
        (root / "new.txt").write_bytes(b"new")
        os.utime(root / "new.txt", ns=(when, when))
        assert (root / "new.txt").stat().st_mtime_ns == when
        assert mtime_metadata(container, "new.txt") == "2017-07-14T02:40:00.123456789Z"

        # A file written here shows the time of its last write, kept through the upload.
        before = (root / "new.txt").stat().st_mtime_ns
        with open(root / "new.txt", "ab") as writer:
            writer.write(b" and more")
        written = (root / "new.txt").stat().st_mtime_ns
        assert written > before
        assert blob(container, "new.txt") == b"new and more"
        assert mtime_metadata(container, "new.txt") is not None

        # A clean file's time changes by metadata alone: nothing is uploaded again.
        os.utime(root / "old.txt", ns=(when, when))
        assert (root / "old.txt").stat().st_mtime_ns == when
        assert blob(container, "old.txt") == b"made elsewhere"
        assert (root / "old.txt").read_bytes() == b"made elsewhere"
        # chmod and chown are accepted (and not kept: blobs have no owner or mode).
        os.chmod(root / "old.txt", 0o600)
        os.chown(root / "old.txt", os.getuid(), os.getgid())
    with mounter.mounted(config) as mount:
        assert mount.path("d/old.txt").stat().st_mtime_ns == when
        assert mount.path("d/new.txt").stat().st_mtime_ns == written


def make_tree(root: Path) -> dict[str, bytes]:
    """A small local tree with nested folders, an empty folder and an empty file."""
    files = {
        "README": b"read me\n",
        "src/main.py": b"print('hello')\n" * 50,
        "src/pkg/__init__.py": b"",
        "src/pkg/data.bin": os.urandom(200_000),
        "docs/guide/intro.md": b"# Intro\n" + b"text " * 2000,
        "docs/guide/deep/er/leaf.txt": b"leaf\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "empty_dir").mkdir()
    os.utime(root / "README", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    return files


def assert_tree_in_container(container, prefix: str, files: dict[str, bytes]) -> None:
    found = {name[len(prefix):]: data for name, data in blobs(container, prefix).items()}
    markers = {name for name in found if is_marker(container, prefix + name)}
    assert {name: data for name, data in found.items() if name not in markers} == files
    assert "empty_dir" in markers


def test_tar_extracts_a_tree(mounter, container, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    files = make_tree(source)
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="tree")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(mount.path("d"))],
                       check=True, capture_output=True, text=True)
        assert_tree_in_container(container, "tree/", files)
        for name, data in files.items():
            assert mount.path(f"d/tree/{name}").read_bytes() == data
        assert mount.path("d/tree/README").stat().st_mtime == 1_600_000_000
        compared = subprocess.run(["diff", "-r", str(source), str(mount.path("d/tree"))],
                                  capture_output=True, text=True)
        assert compared.returncode == 0, compared.stdout + compared.stderr


@pytest.mark.parametrize(("command", "mode"), [
    (["cp", "-a", "-T"], "sync"), (["rsync", "-a"], "sync"), (["rsync", "-a"], "async"),
], ids=["cp", "rsync", "rsync-async"])
def test_copy_a_tree_in(mounter, container, tmp_path, command, mode):
    source = tmp_path / "source"
    source.mkdir()
    files = make_tree(source)
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": mode}])
    with mounter.mounted(config) as mount:
        result = subprocess.run([*command, f"{source}/", str(mount.path("d/copy"))],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        blobmount("sync", str(mount.mountpoint), check=True)
        assert_tree_in_container(container, "copy/", files)
        assert mount.path("d/copy/README").stat().st_mtime == 1_600_000_000
        compared = subprocess.run(["diff", "-r", str(source), str(mount.path("d/copy"))],
                                  capture_output=True, text=True)
        assert compared.returncode == 0, compared.stdout + compared.stderr
        # Run again: nothing changed, so nothing fails (rsync skips by size and time).
        result = subprocess.run([*command, f"{source}/", str(mount.path("d/copy"))],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        blobmount("sync", str(mount.mountpoint), check=True)
        assert_tree_in_container(container, "copy/", files)


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                             "-c", "init.defaultBranch=main", *args], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_git_init_add_commit_log(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        repo = mount.path("d/repo")
        repo.mkdir()
        git("init", "-q", cwd=repo)
        (repo / "hello.txt").write_text("hello\n")
        (repo / "sub").mkdir()
        (repo / "sub/more.txt").write_text("more\n")
        git("add", ".", cwd=repo)
        git("commit", "-q", "-m", "first", cwd=repo)
        (repo / "hello.txt").write_text("hello again\n")
        git("commit", "-q", "-a", "-m", "second", cwd=repo)
        assert git("log", "--format=%s", cwd=repo).split() == ["second", "first"]
        assert git("status", "--porcelain", cwd=repo) == ""
        assert git("show", "HEAD~1:hello.txt", cwd=repo) == "hello\n"
        assert git("fsck", "--strict", cwd=repo) == ""
        stored = names(container, "repo/.git/")
        assert "repo/.git/HEAD" in stored and "repo/.git/refs/heads/main" in stored
        assert not [name for name in stored if name.endswith(".lock")]
        head = blob(container, "repo/.git/refs/heads/main").decode().strip()
        assert head == git("rev-parse", "HEAD", cwd=repo).strip()


def test_editor_saves_by_rename(mounter, container):
    container.upload_blob("notes.txt", b"version 1\n")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        for version in (2, 3):
            assert (root / "notes.txt").read_bytes() == f"version {version - 1}\n".encode()
            swap = root / ".notes.txt.swp"
            with open(swap, "wb") as writer:
                writer.write(f"version {version}\n".encode())
                writer.flush()
                os.fsync(writer.fileno())
            os.rename(swap, root / "notes.txt")
            assert blob(container, "notes.txt") == f"version {version}\n".encode()
            assert names(container) == {"notes.txt"}
            assert sorted(os.listdir(root)) == ["notes.txt"]
        before = downloaded(mount, "d/notes.txt")
        assert (root / "notes.txt").read_bytes() == b"version 3\n"
        assert downloaded(mount, "d/notes.txt") == before  # the cached copy moved with it
        # vim's way: write a backup beside it, write the file in place, drop the backup.
        os.rename(root / "notes.txt", root / "notes.txt~")
        (root / "notes.txt").write_bytes(b"version 4\n")
        os.unlink(root / "notes.txt~")
        assert blobs(container) == {"notes.txt": b"version 4\n"}


APPENDER = textwrap.dedent("""
    import sys
    path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for number in range(start, start + count):
        with open(path, "a") as log:
            log.write(f"line {number}\\n")
""")


def test_a_program_appends_to_a_log_across_opens(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        path = mount.path("d/logs/app.log")
        path.parent.mkdir()
        for start in (0, 20):  # two runs of the program, each opening the file 20 times
            subprocess.run([sys.executable, "-c", APPENDER, str(path), str(start), "20"],
                           check=True)
        expected = "".join(f"line {n}\n" for n in range(40)).encode()
        assert path.read_bytes() == expected
        assert blob(container, "logs/app.log") == expected


def test_200_small_files_in_async_mode(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}])
    with mounter.mounted(config) as mount:
        root = mount.path("d/many")
        root.mkdir()
        expected = {f"many/f{n:03d}.txt": f"file {n}\n".encode() * (n + 1) for n in range(200)}
        for name, data in expected.items():
            (mount.path("d") / name).write_bytes(data)
        # Every one reads back at once, uploaded or not.
        assert all((mount.path("d") / name).read_bytes() == data
                   for name, data in expected.items())
        blobmount("sync", str(mount.mountpoint), check=True)
        assert blobs(container, "many") == {"many": b"", **expected}
        status = mount.status()["uploads"]
        assert (status["count"], status["bytes"], status["failed"]) == (0, 0, [])


def test_a_blob_changed_in_the_container_is_never_overwritten(mounter, container):
    container.upload_blob("shared.txt", b"original\n")
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            listing_ttl=3600)
    with mounter.mounted(config) as mount:
        path = mount.path("d/shared.txt")
        assert path.read_bytes() == b"original\n"  # cached now
        container.upload_blob("shared.txt", b"changed elsewhere\n", overwrite=True)
        with open(path, "ab") as writer:  # within the TTL: the mount still has the old one
            writer.write(b"appended here\n")
        stored = blobs(container)
        assert stored["shared.txt"] == b"changed elsewhere\n"
        conflicts = [name for name in stored if name != "shared.txt"]
        assert len(conflicts) == 1, stored
        assert conflicts[0].startswith("shared.conflict-") and conflicts[0].endswith(".txt")
        assert stored[conflicts[0]] == b"original\nappended here\n"
        assert "conflict" in mount.log() and conflicts[0] in mount.log()
        # Both show in the mount: the container's version under the name.
        assert path.read_bytes() == b"changed elsewhere\n"
        assert sorted(os.listdir(mount.path("d"))) == sorted(stored)
        assert mount.path(f"d/{conflicts[0]}").read_bytes() == b"original\nappended here\n"


def test_entries_with_prefixes_and_moves_between_them(mounter, container):
    name = container.container_name
    config = mounter.config([{"local": "a", "container": name, "remote": "left"},
                             {"local": "b", "container": name, "remote": "right/side"}])
    with mounter.mounted(config) as mount:
        (mount.path("a/one.txt")).write_bytes(b"one")
        os.mkdir(mount.path("b/folder"))
        assert blobs(container) == {"left/one.txt": b"one", "right/side/folder": b""}
        # Another entry is another file system to rename(2): mv copies, then deletes.
        assert errno_of(lambda: os.rename(mount.path("a/one.txt"),
                                          mount.path("b/one.txt"))) == errno.EXDEV
        subprocess.run(["mv", str(mount.path("a/one.txt")), str(mount.path("b/folder/"))],
                       check=True)
        assert blobs(container) == {"right/side/folder": b"",
                                    "right/side/folder/one.txt": b"one"}
        assert os.listdir(mount.path("a")) == []


def test_a_log_renamed_while_open_keeps_what_is_written_after(mounter, container):
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        with open(root / "app.log", "w") as log:  # logrotate's way: rename, write on
            log.write("before the rotation\n")
            log.flush()
            os.rename(root / "app.log", root / "app.log.1")
            log.write("after the rotation\n")
        assert blobs(container) == {"app.log.1": b"before the rotation\nafter the rotation\n"}
        assert (root / "app.log.1").read_text() == "before the rotation\nafter the rotation\n"
        assert not (root / "app.log").exists()


def test_handles_that_outlive_or_skip_their_writes(mounter, container):
    container.upload_blob("untouched.txt", b"as it was")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        root = mount.path("d")
        # Unlinked while open: writing on and closing are fine, and nothing goes up.
        with open(root / "doomed.txt", "wb") as writer:
            writer.write(b"first")
            writer.flush()
            os.unlink(root / "doomed.txt")
            writer.write(b" and more")
        assert "doomed.txt" not in names(container) and not (root / "doomed.txt").exists()
        # Opened for writing and closed unchanged: nothing goes up, nothing is pending,
        # and a change in the container still shows.
        with open(root / "untouched.txt", "r+b"):
            pass
        assert mount.status()["uploads"]["count"] == 0
        assert blob(container, "untouched.txt") == b"as it was"
        # O_APPEND | O_CREAT of a new file, twice (the shell's >>).
        subprocess.run(f"echo one >> {root}/appended.txt; echo two >> {root}/appended.txt",
                       shell=True, check=True)
        assert blob(container, "appended.txt") == b"one\ntwo\n"
