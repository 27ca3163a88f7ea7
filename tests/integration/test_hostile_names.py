"""Blob names that are not POSIX names: the mount shows what it safely can, hides the
rest with one warning each, and never touches a file outside its cache folder."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import urllib.parse
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import upload

pytestmark = pytest.mark.integration

#: Names the SDK can send, and the tree each shows as (None: hidden).
SHOWN = {
    "a/b": "a/b",
    "a/c/d": "a/c/d",
    "ok/" + "L" * 255: "ok/" + "L" * 255,
    "nl\nname": "nl\nname",
    "pct%2Fx": "pct%2Fx",
    "comb e\u0301": "comb e\u0301",
    "rtl\u202eabc.txt": "rtl\u202eabc.txt",
    "\ufeffbom": "\ufeffbom",
    "nonchar\ufdd0": "nonchar\ufdd0",
    "tab\there": "tab\there",
    "sp ace/ x ": "sp ace/ x ",
    "...": "...",
    "..x/.y": "..x/.y",
}
HIDDEN = [
    "a",                  # a folder a/ exists: the folder wins
    "x//y",               # an empty segment
    "dir/",               # ends in '/' but is no marker: folder dir shows, empty
    "long/" + "L" * 256,  # a segment over 255 bytes
    "/lead",              # an empty first segment
]
#: Dot segments: urllib3 drops them from a URL, so these go up by raw HTTP with %2E.
DOTTED = {
    "../../escape": "%2E%2E/%2E%2E/escape",
    "x/../../etc/passwd": "x/%2E%2E/%2E%2E/etc/passwd",
    "dot/./z": "dot/%2E/z",
    ".": "%2E",
    "..": "%2E%2E",
    "dot/../../../../../../tmp/blobmount-escape": "dot/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E"
                                                  "/tmp/blobmount-escape",
}
MANY = 10_000


def _put_raw(container: ContainerClient, endpoint: str, quoted: str, data: bytes) -> None:
    sas = generate_container_sas(
        AZURITE_ACCOUNT, container.container_name, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    url = urllib.parse.urlparse(endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("PUT", f"{url.path}/{container.container_name}/{quoted}?{sas}",
                           body=data, headers={"x-ms-blob-type": "BlockBlob",
                                               "x-ms-version": "2021-08-06"})
        response = connection.getresponse()
        response.read()
        assert response.status == 201, (quoted, response.status)
    finally:
        connection.close()


def _snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    """Every file under `root` (outside `skip`) with its size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in files:
            path = Path(folder, name)
            if path in skip:
                continue
            info = path.lstat()
            found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.mark.slow
def test_hostile_names(mounter, azurite, container, tmp_path):
    blobs = {name: f"bytes of {name!r}".encode() for name in [*SHOWN, *HIDDEN]}
    blobs.update({f"many/f{i:05d}": f"{i}\n".encode() for i in range(MANY)})
    upload(container, blobs, workers=32)
    for name, quoted in DOTTED.items():
        _put_raw(container, azurite.endpoint, quoted, b"evil " + name.encode())
    held = {blob.name for blob in container.list_blobs()}
    assert set(DOTTED) <= held and set(blobs) <= held  # the SDK is the truth

    cache_dir = tmp_path / "cache"
    mountpoint = tmp_path / "mnt"
    config = mounter.config([{"local": "data", "container": container.container_name}])
    # Files that a blob name might reach if it escaped: the test's own folder, /tmp.
    skip = {cache_dir, mountpoint, tmp_path / "blobmount.log"}
    before = _snapshot(tmp_path, skip)
    tmp_before = set(os.listdir("/tmp"))
    passwd = Path("/etc/passwd").stat()
    with mounter.mounted(config) as mount:
        root = mount.path("data")
        assert sorted(os.listdir(root)) == sorted(
            ["a", "ok", "nl\nname", "pct%2Fx", "comb e\u0301", "rtl\u202eabc.txt",
             "\ufeffbom", "nonchar\ufdd0", "tab\there", "sp ace", "...", "..x",
             "x", "dir", "long", "dot", "many"])
        assert (root / "a").is_dir() and sorted(os.listdir(root / "a")) == ["b", "c"]
        for empty in ("x", "dir", "long", "dot"):
            assert (root / empty).is_dir() and os.listdir(root / empty) == [], empty
        for name, shown in SHOWN.items():
            assert (root / shown).read_bytes() == blobs[name], name
        names = os.listdir(root / "many")
        assert len(names) == MANY and len(set(names)) == MANY
        for i in range(0, MANY, 997):
            assert (root / f"many/f{i:05d}").read_bytes() == f"{i}\n".encode()
        # Walking everything reaches nothing hidden, and nothing twice.
        walked = []
        for folder, _dirs, files in os.walk(root):
            walked += [os.path.relpath(os.path.join(folder, f), root) for f in files]
        assert sorted(w for w in walked if not w.startswith("many/")) == sorted(SHOWN.values())

        log = mount.log()
        # One warning for each name hidden: the blob, or the prefix that holds it.
        warned = [".", "..", "../", "/", "a", "x//", "x/../", "dir/", "long/" + "L" * 256,
                  "dot/./", "dot/../"]
        for blob in warned:
            assert log.count(f"hiding blob {blob!r}") == 1, blob
        assert log.count("hiding blob") == len(warned)
        # Reading everything again warns no more.
        os.listdir(root)
        for empty in ("x", "dir", "long", "dot"):
            os.listdir(root / empty)
        assert mount.log().count("hiding blob") == log.count("hiding blob")

    # Nothing outside the cache folder was made, changed or deleted...
    assert _snapshot(tmp_path, skip) == before
    assert not [name for name in set(os.listdir("/tmp")) - tmp_before if "escape" in name]
    assert not Path("/tmp/blobmount-escape").exists()
    assert Path("/etc/passwd").stat().st_mtime_ns == passwd.st_mtime_ns
    # ...and every cached copy is under <cache>/<entry>/blobs.
    for folder, _dirs, files in os.walk(cache_dir):
        for name in files:
            relative = Path(folder, name).relative_to(cache_dir)
            assert relative.parent == Path(".") or "blobs" in relative.parts[:2], relative
