"""Downloads are checked against the blob's Content-MD5: a small file before anyone
reads it, a large one (read while it downloads) before anyone reads to its end."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
from azure.storage.blob import ContentSettings

from .conftest import upload

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("through", ["sdk", "ranges", "azcopy"])
def test_bytes_that_do_not_match_content_md5_are_never_served(mounter, container, tmp_path,
                                                               through):
    size = 6 * 1024 * 1024 if through == "ranges" else 200_000  # ranges: over 4 MiB
    good, bad = os.urandom(size), os.urandom(size)
    upload(container, {"d/good.bin": good, "d/bad.bin": bad})
    container.get_blob_client("d/good.bin").set_http_headers(
        ContentSettings(content_md5=bytearray(hashlib.md5(good).digest())))
    container.get_blob_client("d/bad.bin").set_http_headers(
        ContentSettings(content_md5=bytearray(hashlib.md5(b"other bytes").digest())))
    assert container.get_blob_client("d/bad.bin").get_blob_properties() \
        .content_settings.content_md5 == hashlib.md5(b"other bytes").digest()
    config = mounter.config([{"local": "data", "container": container.container_name}],
                            sdk_download_max="64KiB" if through == "azcopy" else "64MiB")
    with mounter.mounted(config) as mount:
        root = mount.path("data")
        assert (root / "d/good.bin").read_bytes() == good
        for _ in range(2):  # and again: nothing was kept from the first try
            with pytest.raises(OSError) as failed:
                (root / "d/bad.bin").read_bytes()
            assert failed.value.errno == errno.EIO
        cached = [name for folder, _d, files in os.walk(tmp_path / "cache") for name in files
                  if "blobs" in folder.split(os.sep)]
        assert len(cached) == 1, cached  # good.bin only: no copy, no temporary file
        assert "d/bad.bin" in mount.log() and "MD5" in mount.log()
        assert mount.status()["azcopy_jobs"] >= (2 if through == "azcopy" else 0)


def test_a_large_blob_without_content_md5_reads_whole(mounter, container):
    data = os.urandom(12 * 1024 * 1024)  # ranges, and nothing to check them against
    upload(container, {"plain.bin": data})
    container.get_blob_client("plain.bin").set_http_headers(ContentSettings())
    assert container.get_blob_client("plain.bin").get_blob_properties() \
        .content_settings.content_md5 is None
    with mounter.mounted(mounter.config([{"local": "data",
                                          "container": container.container_name}])) as mount:
        assert mount.path("data/plain.bin").read_bytes() == data
        assert mount.status()["downloads"]["by_path"] == {"data/plain.bin": 1}
