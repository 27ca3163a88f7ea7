"""Extended attributes through a real mount: a blob's properties, metadata and index
tags, read with getfattr and os.getxattr, changed with setfattr, checked through the SDK."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess

import pytest
from azure.storage.blob import ContentSettings

pytestmark = pytest.mark.integration


def _xattr_errno(action) -> int:
    with pytest.raises(OSError) as caught:
        action()
    return caught.value.errno


def test_extended_attributes(mounter, container):
    data = b"attributes of a blob\n"
    container.upload_blob("f.txt", data, metadata={"origin": "sdk", "Kept": "yes"},
                          content_settings=ContentSettings(content_type="text/plain"))
    name = container.container_name
    config = mounter.config([{"local": "d", "container": name}], xattrs=True)
    with mounter.mounted(config) as mount:
        path = str(mount.path("d/f.txt"))
        props = container.get_blob_client("f.txt").get_blob_properties()
        names = set(os.listxattr(path))
        assert {"user.blob.etag", "user.blob.content_type", "user.blob.content_md5",
                "user.blob.last_modified", "user.blob.access_tier",
                "user.blobmount.cache_state", "user.meta.origin", "user.meta.Kept"} <= names
        assert os.getxattr(path, "user.blob.etag").decode() == props.etag.strip('"')
        assert os.getxattr(path, "user.blob.content_type") == b"text/plain"
        assert os.getxattr(path, "user.blob.content_md5").decode() == hashlib.md5(
            data).hexdigest()
        assert os.getxattr(path, "user.blob.last_modified").decode() == (
            props.last_modified.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert os.getxattr(path, "user.blob.access_tier") == b"Hot"
        assert os.getxattr(path, "user.meta.origin") == b"sdk"
        assert os.getxattr(path, "user.blobmount.cache_state") == b"uncached"
        assert mount.path("d/f.txt").read_bytes() == data
        assert os.getxattr(path, "user.blobmount.cache_state") == b"clean"
        # Not there, not ours, not writable.
        assert _xattr_errno(lambda: os.getxattr(path, "user.meta.absent")) == errno.ENODATA
        assert _xattr_errno(lambda: os.getxattr(path, "user.other")) == errno.ENODATA
        assert _xattr_errno(lambda: os.getxattr(path, "security.selinux")) == errno.ENODATA
        assert _xattr_errno(lambda: os.setxattr(path, "user.blob.etag", b"x")) == errno.EPERM
        assert _xattr_errno(lambda: os.removexattr(path, "user.blobmount.cache_state")) == (
            errno.EPERM)
        assert _xattr_errno(lambda: os.setxattr(path, "user.meta.hdi_isfolder", b"true")) == (
            errno.EPERM)
        assert _xattr_errno(lambda: os.setxattr(path, "user.meta.not-valid", b"x")) == (
            errno.EINVAL)
        assert _xattr_errno(lambda: os.setxattr(path, "user.free", b"x")) == errno.ENOTSUP
        # Metadata set through the mount lands on the blob, beside the keys it had.
        subprocess.run(["setfattr", "-n", "user.meta.owner", "-v", "alice", path], check=True)
        assert container.get_blob_client("f.txt").get_blob_properties().metadata == {
            "origin": "sdk", "Kept": "yes", "owner": "alice"}
        assert os.getxattr(path, "user.meta.owner") == b"alice"
        os.removexattr(path, "user.meta.origin")
        assert container.get_blob_client("f.txt").get_blob_properties().metadata == {
            "Kept": "yes", "owner": "alice"}
        assert _xattr_errno(lambda: os.removexattr(path, "user.meta.origin")) == errno.ENODATA
        # A new ETag for the same bytes: the cached copy is still good.
        assert os.getxattr(path, "user.blobmount.cache_state") == b"clean"
        assert mount.path("d/f.txt").read_bytes() == data
        assert mount.status()["downloads"]["by_path"] == {"d/f.txt": 1}
        # Blob index tags (Azurite 3.37 has them).
        os.setxattr(path, "user.tag.project", b"apollo")
        assert container.get_blob_client("f.txt").get_blob_tags() == {"project": "apollo"}
        assert os.getxattr(path, "user.tag.project") == b"apollo"
        assert "user.tag.project" in os.listxattr(path)
        os.removexattr(path, "user.tag.project")
        assert container.get_blob_client("f.txt").get_blob_tags() == {}
        dump = subprocess.run(["getfattr", "-d", "-m", "-", path], capture_output=True,
                              text=True, check=True).stdout
        assert 'user.meta.owner="alice"' in dump and "user.blob.etag=" in dump
        # Folders have none.
        assert os.listxattr(mount.path("d")) == []


def test_metadata_set_through_the_mount_survives_a_rewrite(mounter, container):
    container.upload_blob("notes.txt", b"first\n", metadata={"origin": "sdk"})
    config = mounter.config([{"local": "d", "container": container.container_name}],
                            xattrs=True)
    with mounter.mounted(config) as mount:
        path = mount.path("d/notes.txt")
        os.setxattr(path, "user.meta.owner", b"alice")
        with open(path, "a") as log:
            log.write("second\n")
        props = container.get_blob_client("notes.txt").get_blob_properties()
        assert container.download_blob("notes.txt").readall() == b"first\nsecond\n"
        assert props.metadata["owner"] == "alice"
        assert props.metadata["origin"] == "sdk"
        assert "mtime" in props.metadata


def test_xattrs_off_by_default_the_kernel_stops_asking(mounter, container):
    container.upload_blob("plain.txt", b"plain")
    config = mounter.config([{"local": "d", "container": container.container_name}])
    with mounter.mounted(config) as mount:
        path = mount.path("d/plain.txt")
        for action in (lambda: os.getxattr(path, "user.blob.etag"),
                       lambda: os.listxattr(path),
                       lambda: os.setxattr(path, "user.meta.owner", b"alice")):
            with pytest.raises(OSError) as caught:
                action()
            assert caught.value.errno == errno.EOPNOTSUPP
        assert path.read_bytes() == b"plain"
        assert "owner" not in (container.get_blob_client("plain.txt")
                               .get_blob_properties().metadata or {})
