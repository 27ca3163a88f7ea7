"""`Xattrs` through `BlobFS`'s xattr handlers, with no FUSE: a blob's properties,
metadata and index tags as extended attributes, over the fake remote, each refusal
answered with the errno the kernel must see."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from blobmount.xattrs import Xattrs

from .test_file_life_model import machine
from .test_fs_api import CALLER, Kernel


class XattrKernel(Kernel):
    """The kernel's xattr calls, on a BlobFS whose xattrs are on."""

    def __init__(self, state: Any, *, read_only: bool = False) -> None:
        super().__init__(state)
        entries = [dataclasses.replace(state.entry, read_only=read_only)]
        self.fs.xattrs = state.loop.sync(
            lambda: Xattrs(state.namespace, state.cache, state.uploads, entries))

    def get(self, inode: int, name: str) -> bytes:
        return self.call(self.fs.getxattr, inode, name.encode(), CALLER)

    def names(self, inode: int) -> list[str]:
        return [name.decode() for name in self.call(self.fs.listxattr, inode, CALLER)]

    def set(self, inode: int, name: str, value: bytes) -> None:
        self.call(self.fs.setxattr, inode, name.encode(), value, CALLER)

    def remove(self, inode: int, name: str) -> None:
        self.call(self.fs.removexattr, inode, name.encode(), CALLER)

    def lookup(self, name: bytes) -> int:
        return self.call(self.fs.lookup, self.root, name).st_ino

    def remote_calls(self, method: str) -> int:
        return sum(1 for call in self.state.remote.calls if call[0] == method)


@contextlib.contextmanager
def xattr_kernel(mode: str = "sync", **options: Any) -> Iterator[XattrKernel]:
    with machine(mode) as state:
        yield XattrKernel(state, **options)


def test_a_blob_s_properties_are_read_only_attributes() -> None:
    with xattr_kernel() as k:
        inode = k.create(b"notes", b"hello")  # sync: up at close
        blob = k.state.remote.files()["notes"]
        assert k.get(inode, "user.blob.etag") == blob.etag.encode()
        assert k.get(inode, "user.blob.content_md5") == hashlib.md5(
            b"hello", usedforsecurity=False).hexdigest().encode()
        assert k.get(inode, "user.blob.access_tier") == b"Hot"
        names = k.names(inode)
        assert names[:5] == [
            "user.blobmount.cache_state", "user.blob.etag", "user.blob.content_type",
            "user.blob.content_md5", "user.blob.access_tier"]
        # then the blob's metadata: the mode and owner posix.py keeps, the mtime
        assert names[5:] == sorted(f"user.meta.{key}" for key in blob.metadata)
        assert {"user.meta.mode", "user.meta.uid", "user.meta.gid"} <= set(names)
        assert k.get(inode, "user.meta.mode") == blob.metadata["mode"].encode()
        # The fake's HEAD has no Last-Modified: not there, and not listed.
        assert k.errno_of(k.fs.getxattr, inode, b"user.blob.last_modified",
                          CALLER) == errno.ENODATA
        assert k.errno_of(k.fs.setxattr, inode, b"user.blob.etag", b"x", CALLER) == errno.EPERM
        assert k.errno_of(k.fs.removexattr, inode, b"user.blobmount.cache_state",
                          CALLER) == errno.EPERM


def test_the_cache_state_follows_the_copy() -> None:
    with xattr_kernel("async") as k:
        k.state.remote.put_elsewhere("seen", b"from elsewhere")
        seen = k.lookup(b"seen")
        assert k.get(seen, "user.blobmount.cache_state") == b"uncached"
        assert k.read(seen) == b"from elsewhere"
        assert k.get(seen, "user.blobmount.cache_state") == b"clean"
        k.state.remote.put_elsewhere("seen", b"changed elsewhere")
        seen = k.lookup(b"seen")  # TTL 0: listed again, the new ETag known
        assert k.get(seen, "user.blobmount.cache_state") == b"stale"
        written = k.create(b"written", b"not up yet")  # async: journaled at close
        assert k.get(written, "user.blobmount.cache_state") == b"pending"


def test_metadata_set_and_removed_lands_on_the_blob_and_keeps_the_copy() -> None:
    with xattr_kernel() as k:
        inode = k.create(b"notes", b"hello")
        etag = k.state.remote.files()["notes"].etag
        k.set(inode, "user.meta.origin", b"lab 7")
        blob = k.state.remote.files()["notes"]
        assert blob.metadata["origin"] == "lab 7" and blob.data == b"hello"
        assert blob.etag != etag  # a new version of the same bytes
        assert k.get(inode, "user.meta.origin") == k.get(inode, "user.meta.ORIGIN") == b"lab 7"
        assert "user.meta.origin" in k.names(inode)
        # The cached copy took the new ETag: reading it downloads nothing.
        assert k.get(inode, "user.blobmount.cache_state") == b"clean"
        assert k.read(inode) == b"hello"
        assert k.remote_calls("download") == 0
        k.remove(inode, "user.meta.origin")
        assert "origin" not in k.state.remote.files()["notes"].metadata
        assert k.errno_of(k.fs.getxattr, inode, b"user.meta.origin", CALLER) == errno.ENODATA
        assert k.errno_of(k.fs.removexattr, inode, b"user.meta.origin",
                          CALLER) == errno.ENODATA


@pytest.mark.parametrize(("name", "value", "code"), [
    (b"user.meta.not-valid", b"x", errno.EINVAL),    # not a C# identifier
    (b"user.meta.1st", b"x", errno.EINVAL),
    (b"user.meta.note", "é".encode(), errno.EINVAL),  # not ASCII
    (b"user.meta.note", b"tab\there", errno.EINVAL),  # not printable
    (b"user.meta.hdi_isfolder", b"true", errno.EPERM),  # blobmount's own key
    (b"user.free", b"x", errno.ENOTSUP),              # outside user.meta.* and user.tag.*
    (b"user.tag.no!", b"x", errno.EINVAL),
    (b"user.tag.ok", b"no!", errno.EINVAL),
])  # fmt: skip
def test_names_and_values_azure_cannot_hold_are_refused(name: bytes, value: bytes,
                                                        code: int) -> None:
    with xattr_kernel() as k:
        inode = k.create(b"notes", b"hello")
        assert k.errno_of(k.fs.setxattr, inode, name, value, CALLER) == code
        assert k.remote_calls("update_metadata") == k.remote_calls("update_tags") == 0


def test_names_outside_user_and_folders_cost_no_request() -> None:
    with xattr_kernel() as k:
        inode = k.create(b"notes", b"hello")
        folder = k.call(k.fs.mkdir, k.root, b"folder", 0o40755, CALLER).st_ino
        before = len(k.state.remote.calls)
        for name in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
            assert k.errno_of(k.fs.getxattr, inode, name, CALLER) == errno.ENODATA
        assert k.names(folder) == []
        assert k.errno_of(k.fs.getxattr, folder, b"user.meta.x", CALLER) == errno.ENODATA
        assert len(k.state.remote.calls) == before
        assert k.errno_of(k.fs.setxattr, folder, b"user.meta.x", b"1", CALLER) == errno.ENOTSUP


def test_index_tags_are_attributes_and_keep_the_etag() -> None:
    with xattr_kernel() as k:
        inode = k.create(b"notes", b"hello")
        etag = k.state.remote.files()["notes"].etag
        k.set(inode, "user.tag.project", b"alpha")
        assert k.state.remote.blob_tags["notes"] == {"project": "alpha"}
        assert k.get(inode, "user.tag.project") == b"alpha"
        assert k.names(inode)[-1] == "user.tag.project"
        k.remove(inode, "user.tag.project")
        assert k.state.remote.blob_tags["notes"] == {}
        assert k.errno_of(k.fs.getxattr, inode, b"user.tag.project", CALLER) == errno.ENODATA
        assert k.state.remote.files()["notes"].etag == etag


def test_an_account_without_tags_says_enotsup_once_and_is_not_asked_again() -> None:
    with xattr_kernel() as k:
        k.state.remote.tags_supported = False
        inode = k.create(b"notes", b"hello")
        assert "user.blob.etag" in k.names(inode)  # listing leaves tags out, quietly
        assert not any(name.startswith("user.tag.") for name in k.names(inode))
        assert k.errno_of(k.fs.getxattr, inode, b"user.tag.x", CALLER) == errno.ENOTSUP
        asked = k.remote_calls("tags")
        assert asked == 1
        assert k.errno_of(k.fs.setxattr, inode, b"user.tag.x", b"1", CALLER) == errno.ENOTSUP
        assert k.errno_of(k.fs.getxattr, inode, b"user.tag.x", CALLER) == errno.ENOTSUP
        assert (k.remote_calls("tags"), k.remote_calls("update_tags")) == (asked, 0)


def test_a_read_only_entry_shows_attributes_and_refuses_changes() -> None:
    with xattr_kernel(read_only=True) as k:
        inode = k.create(b"notes", b"hello")  # the handlers' own entry is writable
        assert k.get(inode, "user.blob.access_tier") == b"Hot"
        assert k.errno_of(k.fs.setxattr, inode, b"user.meta.x", b"1", CALLER) == errno.EROFS


def test_metadata_of_a_file_being_written_waits_for_its_bytes() -> None:
    with xattr_kernel("sync") as k:
        info, attrs = k.call(k.fs.create, k.root, b"open", 0o100644, 0o2, CALLER)
        k.call(k.fs.write, info.fh, 0, b"half")
        # Open and written, nothing journaled yet: no blob to put metadata on.
        assert k.errno_of(k.fs.setxattr, attrs.st_ino, b"user.meta.x", b"1",
                          CALLER) == errno.EBUSY
        k.call(k.fs.flush, info.fh)
        k.call(k.fs.release, info.fh)
    with xattr_kernel("async") as k:
        inode = k.create(b"pending", b"all of it")  # journaled, not uploaded
        assert "pending" not in k.state.remote.files()
        k.set(inode, "user.meta.x", b"1")  # uploads it first, then sets the metadata
        blob = k.state.remote.files()["pending"]
        assert (blob.data, blob.metadata["x"]) == (b"all of it", "1")


def test_properties_are_read_once_within_the_ttl() -> None:
    with xattr_kernel() as k:
        inode = k.create(b"notes", b"hello")
        k.state.namespace.ttl = 3600.0
        k.get(inode, "user.blob.etag")
        k.names(inode)
        k.get(inode, "user.blob.content_md5")
        assert k.remote_calls("head") == 1
        k.set(inode, "user.meta.x", b"1")  # a new version: read again
        assert k.get(inode, "user.meta.x") == b"1"
        assert k.remote_calls("head") == 2
