"""`BlobFS`, the kernel's requests, called as the kernel would but with no FUSE: the
parts over a fake remote (as the file-life model wires them), each request decoded,
forwarded, and its failure answered with the errno the kernel must see."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest

from blobmount import cache as cache_module
from blobmount import commits as commits_module
from blobmount.azure import parse_mtime
from blobmount.cachetables import CopyState
from blobmount.decide import JOURNAL_BYTES_MAX
from blobmount.errors import RemoteAuthError
from blobmount.fs import BlobFS
from blobmount.store import ROOT_INODE

from .test_file_life_model import FileLife, machine

CALLER = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)


class Kernel:
    """Calls `BlobFS`'s handlers in the parts' trio loop, as the kernel's requests."""

    def __init__(self, state: FileLife, attr_timeout: float = 0.0) -> None:
        self.state = state
        self.fs = BlobFS(state.namespace, state.life, [state.entry], attr_timeout=attr_timeout)
        self.root = self.call(self.fs.lookup, ROOT_INODE, b"data").st_ino

    def call(self, handler: Any, *args: Any) -> Any:
        return self.state.loop.call(handler, *args)

    def errno_of(self, handler: Any, *args: Any) -> int:
        with pytest.raises(pyfuse3.FUSEError) as failed:
            self.call(handler, *args)
        return failed.value.errno

    def create(self, name: bytes, data: bytes = b"", parent: int | None = None) -> int:
        """A file made, written and closed; its inode."""
        info, attrs = self.call(self.fs.create, parent or self.root, name, 0o100644,
                                os.O_RDWR, CALLER)
        if data:
            assert self.call(self.fs.write, info.fh, 0, data) == len(data)
        self.call(self.fs.flush, info.fh)
        self.call(self.fs.release, info.fh)
        return attrs.st_ino

    def read(self, inode: int) -> bytes:
        info = self.call(self.fs.open, inode, os.O_RDONLY, CALLER)
        try:
            return self.call(self.fs.read, info.fh, 0, 1 << 20)
        finally:
            self.call(self.fs.release, info.fh)

    def names(self, inode: int) -> list[str]:
        """What `readdir` hands the kernel, as `ls` would see it."""
        listed: list[str] = []

        def reply(token: Any, name: bytes, attrs: Any, next_id: int) -> bool:
            listed.append(name.decode())
            return True

        fh = self.call(self.fs.opendir, inode, CALLER)
        original = pyfuse3.readdir_reply
        pyfuse3.readdir_reply = reply
        try:
            self.call(self.fs.readdir, fh, 0, None)
        finally:
            pyfuse3.readdir_reply = original
            self.call(self.fs.releasedir, fh)
        return listed


@contextlib.contextmanager
def kernel(mode: str = "sync", attr_timeout: float = 0.0, **start: Any) -> Iterator[Kernel]:
    with machine(mode, **start) as state:
        yield Kernel(state, attr_timeout)


def fields(**update: bool) -> SimpleNamespace:
    """The setattr fields the kernel sets (pyfuse3's own type cannot be made here)."""
    names = ("size", "mode", "uid", "gid", "atime", "mtime", "ctime")
    return SimpleNamespace(**{f"update_{name}": update.get(name, False) for name in names})


def test_a_file_made_through_the_handlers_is_a_blob_with_its_bytes() -> None:
    with kernel("sync") as k:
        inode = k.create(b"notes.txt", b"hello")
        assert k.state.remote.files()["notes.txt"].data == b"hello"  # sync: up at close
        attrs = k.call(k.fs.getattr, inode)
        assert (attrs.st_size, stat.S_ISREG(attrs.st_mode)) == (5, True)
        assert k.read(inode) == b"hello"
        assert k.names(k.root) == ["notes.txt"]


def test_a_blob_made_elsewhere_is_looked_up_listed_and_read() -> None:
    with kernel("sync") as k:
        k.state.remote.put_elsewhere("d/seen", b"from elsewhere")
        folder = k.call(k.fs.lookup, k.root, b"d")
        assert stat.S_ISDIR(folder.st_mode)
        assert k.names(folder.st_ino) == ["seen"]
        inode = k.call(k.fs.lookup, folder.st_ino, b"seen").st_ino
        assert k.read(inode) == b"from elsewhere"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rename_and_unlink_reach_the_container(mode: str) -> None:
    with kernel(mode) as k:
        k.create(b"a", b"bytes")
        k.call(k.fs.rename, k.root, b"a", k.root, b"b", 0, CALLER)
        k.state.loop.call(k.state._sync)
        assert set(k.state.remote.files()) == {"b"}
        assert k.state.remote.files()["b"].data == b"bytes"
        k.call(k.fs.unlink, k.root, b"b", CALLER)
        assert "b" not in k.state.remote.files()
        assert k.names(k.root) == []


def test_unlinking_a_file_never_uploaded_sends_no_delete() -> None:
    """git's temporary files: made, written, closed and unlinked before any upload.
    No blob is theirs; one put at the name elsewhere meanwhile is not this file's."""
    with kernel("async") as k:
        k.create(b"tmp_pack", b"bytes")
        k.state.remote.put_elsewhere("tmp_pack", b"someone else's")
        k.call(k.fs.unlink, k.root, b"tmp_pack", CALLER)
        k.state.loop.call(k.state._sync)
        assert ("delete", "tmp_pack") not in k.state.remote.calls
        assert k.state.remote.files()["tmp_pack"].data == b"someone else's"
        k.create(b"kept", b"up")
        k.state.loop.call(k.state._sync)  # uploaded: now it has a blob of its own
        k.call(k.fs.unlink, k.root, b"kept", CALLER)
        assert ("delete", "kept") in k.state.remote.calls
        assert "kept" not in k.state.remote.files()


def test_errors_reach_the_kernel_as_their_errno() -> None:
    with kernel("sync") as k:
        k.create(b"file", b"x")
        folder = k.call(k.fs.mkdir, k.root, b"folder", 0o40755, CALLER).st_ino
        k.create(b"inside", b"y", parent=folder)
        assert k.call(k.fs.lookup, k.root, b"missing").st_ino == 0  # a negative entry
        assert k.errno_of(k.fs.lookup, k.root, b"\xff") == errno.ENOENT  # not UTF-8
        assert k.errno_of(k.fs.lookup, k.root, b"n" * 256) == errno.ENAMETOOLONG
        assert k.errno_of(k.fs.mkdir, k.root, b"folder", 0o40755, CALLER) == errno.EEXIST
        assert k.errno_of(k.fs.rmdir, k.root, b"folder", CALLER) == errno.ENOTEMPTY
        assert k.errno_of(k.fs.open, folder, os.O_RDONLY, CALLER) == errno.EISDIR
        assert k.errno_of(k.fs.link, 0, 0, b"x", CALLER) == errno.EPERM  # hard links
        exchange = pyfuse3.RENAME_EXCHANGE
        assert k.errno_of(k.fs.rename, k.root, b"file", k.root, b"folder", exchange,
                          CALLER) == errno.EINVAL
        noreplace = pyfuse3.RENAME_NOREPLACE
        k.create(b"other", b"z")
        assert k.errno_of(k.fs.rename, k.root, b"file", k.root, b"other", noreplace,
                          CALLER) == errno.EEXIST
        assert k.state.remote.files()["other"].data == b"z"  # nothing replaced
        file = k.call(k.fs.lookup, k.root, b"file").st_ino
        assert k.errno_of(k.fs.readlink, file, CALLER) == errno.EINVAL


def test_chmod_and_truncate_by_setattr_keep_the_mode_as_metadata() -> None:
    with kernel("sync") as k:
        inode = k.create(b"script", b"0123456789")
        attr = pyfuse3.EntryAttributes()
        attr.st_mode = stat.S_IFREG | 0o750
        shown = k.call(k.fs.setattr, inode, attr, fields(mode=True), None, CALLER)
        assert stat.S_IMODE(shown.st_mode) == 0o750
        assert k.state.remote.files()["script"].metadata["mode"] == "100750"  # rclone's
        attr.st_size = 4
        shown = k.call(k.fs.setattr, inode, attr, fields(size=True), None, CALLER)
        assert shown.st_size == 4
        assert k.state.remote.files()["script"].data == b"0123"


def test_a_symlink_is_a_blob_holding_its_target() -> None:
    with kernel("sync") as k:
        link = k.call(k.fs.symlink, k.root, b"latest", b"runs/42", CALLER)
        assert stat.S_ISLNK(link.st_mode)
        assert k.call(k.fs.readlink, link.st_ino, CALLER) == b"runs/42"
        blob = k.state.remote.files()["latest"]
        assert (blob.data, blob.metadata.get("is_symlink")) == (b"runs/42", "true")


def test_an_unlinked_open_file_lives_until_closed_and_forgotten() -> None:
    with kernel("sync") as k:
        info, attrs = k.call(k.fs.create, k.root, b"x", 0o100644, os.O_RDWR, CALLER)
        inode = attrs.st_ino  # create hands the kernel one reference
        k.call(k.fs.write, info.fh, 0, b"kept")
        k.call(k.fs.unlink, k.root, b"x", CALLER)
        assert k.call(k.fs.getattr, inode).st_nlink == 0  # fstat of the open file
        assert k.call(k.fs.read, info.fh, 0, 10) == b"kept"
        k.call(k.fs.flush, info.fh)
        k.call(k.fs.release, info.fh)
        assert k.call(k.fs.getattr, inode).st_nlink == 0  # the kernel may still ask
        k.call(k.fs.forget, [(inode, 1)])
        assert k.errno_of(k.fs.getattr, inode) == errno.ENOENT
        assert "x" not in k.state.remote.files()


def test_forget_of_an_unknown_inode_raises_nothing() -> None:
    with kernel("sync") as k:
        k.call(k.fs.forget, [(999_999, 1)])  # the kernel takes no answer
        assert k.names(k.root) == []


def test_setattr_mknod_and_xattrs_answer_with_their_errnos() -> None:
    with kernel("sync") as k:
        folder = k.call(k.fs.mkdir, k.root, b"folder", 0o40755, CALLER).st_ino
        attr = pyfuse3.EntryAttributes()
        attr.st_size = 0
        assert k.errno_of(k.fs.setattr, folder, attr, fields(size=True), None,
                          CALLER) == errno.EISDIR
        mount_table = k.call(k.fs.lookup, ROOT_INODE, b".").st_ino  # belongs to no entry
        assert k.errno_of(k.fs.setattr, mount_table, attr, fields(mode=True), None,
                          CALLER) == errno.EROFS
        # mknod: a FIFO is an empty blob whose mode has the type bits; a folder is not
        # something mknod makes here.
        fifo = k.call(k.fs.mknod, k.root, b"pipe", stat.S_IFIFO | 0o640, 0, CALLER)
        assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
        assert k.state.remote.files()["pipe"].metadata["mode"] == "10640"
        assert k.errno_of(k.fs.mknod, k.root, b"odd", stat.S_IFDIR | 0o755, 0,
                          CALLER) == errno.EPERM
        assert k.errno_of(k.fs.mkdir, k.root, b"\xff", 0o40755, CALLER) == errno.EINVAL
        # With xattrs off the kernel is told ENOSYS, once, and stops asking.
        assert k.errno_of(k.fs.getxattr, folder, b"user.x", CALLER) == errno.ENOSYS
        assert k.errno_of(k.fs.listxattr, folder, CALLER) == errno.ENOSYS
        stats = k.call(k.fs.statfs, CALLER)
        assert stats.f_namemax == 255 and stats.f_blocks >= stats.f_bfree > 0


def test_a_missing_name_is_a_negative_entry_the_kernel_keeps_as_long_as_names() -> None:
    with kernel("sync", attr_timeout=0.75) as k:
        missing = k.call(k.fs.lookup, k.root, b"missing")
        assert (missing.st_ino, missing.entry_timeout) == (0, 0.75)
        inode = k.create(b"missing", b"x")  # the kernel's create replaces that entry
        found = k.call(k.fs.lookup, k.root, b"missing")
        assert (found.st_ino, found.entry_timeout) == (inode, 0.75)


def test_answers_are_logged_quietly_and_failures_as_warnings(caplog) -> None:
    with kernel("sync") as k:
        k.create(b"file", b"x")
        k.call(k.fs.mkdir, k.root, b"folder", 0o40755, CALLER)
        with caplog.at_level(logging.DEBUG, logger="blobmount.fs"):
            assert k.errno_of(k.fs.mkdir, k.root, b"folder", 0o40755, CALLER) == errno.EEXIST
            assert k.errno_of(k.fs.link, 0, k.root, b"x", CALLER) == errno.EPERM
            assert k.errno_of(k.fs.lookup, k.root, b"\xff") == errno.ENOENT
        assert [r.levelname for r in caplog.records if r.name == "blobmount.fs"] == [
            "DEBUG"] * 3

        def refused(blob: str) -> None:
            raise RemoteAuthError(f"delete of {blob}: this request is not authorized")

        k.state.remote.delete = refused
        caplog.clear()
        assert k.errno_of(k.fs.unlink, k.root, b"file", CALLER) == errno.EACCES
        (warning,) = [r for r in caplog.records if r.name == "blobmount.fs"]
        assert warning.levelname == "WARNING" and "not authorized" in warning.getMessage()


def test_a_utimens_of_a_file_waiting_to_go_up_fsyncs_nothing_and_goes_up_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A touch after close: the close made the file durable, so the new times only
    change its journal row, and its one upload takes them."""
    fsynced: list[str] = []
    monkeypatch.setattr(commits_module, "fsync_file", lambda path: fsynced.append("file"))
    monkeypatch.setattr(commits_module, "fsync_folder", lambda path: fsynced.append("folder"))
    data = b"#" * (JOURNAL_BYTES_MAX + 1)  # too large for its journal row: fsynced
    with kernel("async") as k:
        inode = k.create(b"module.py", data)
        assert fsynced == ["file", "folder"]
        attr = pyfuse3.EntryAttributes()
        attr.st_atime_ns = attr.st_mtime_ns = 1_600_000_000 * 10**9
        k.call(k.fs.setattr, inode, attr, fields(atime=True, mtime=True), None, CALLER)
        assert fsynced == ["file", "folder"]
        assert k.state.remote.files() == {}  # still waiting in the journal
        k.state.loop.call(k.state._sync)
        blob = k.state.remote.files()["module.py"]
        assert blob.data == data
        assert parse_mtime(blob.metadata["mtime"]) == 1_600_000_000 * 10**9


def test_a_small_file_is_never_fsynced_and_its_uploaded_copy_waits_for_the_cache_sync(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal row holds a small file's bytes, so its close fsyncs nothing; once
    the upload is done the row goes, and the copy waits for the next sync of the cache
    as a downloaded one does (a mount after a crash drops it: copysync.py)."""
    fsynced: list[str] = []
    for module in (commits_module, cache_module):
        monkeypatch.setattr(module, "fsync_file", lambda path: fsynced.append("file"))
        monkeypatch.setattr(module, "fsync_folder", lambda path: fsynced.append("folder"))
    with kernel("async") as k:
        store = k.state.store
        k.create(b"module.py", b"print('hi')\n")
        assert fsynced == []
        assert [data for path, data in k.state.loop.sync(store.small_copies)] == [
            b"print('hi')\n"]
        assert k.state.loop.sync(store.unsynced_copies) == []  # the row holds the bytes
        k.state.loop.call(k.state._sync)
        assert fsynced == []
        assert k.state.remote.files()["module.py"].data == b"print('hi')\n"
        assert k.state.loop.sync(store.uploads) == []
        [copy] = k.state.loop.sync(store.unsynced_copies)
        record = k.state.loop.sync(store.cached_file, copy)
        assert (record.blob, record.state) == ("module.py", CopyState.CLEAN)
