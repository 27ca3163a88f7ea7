"""The daemon's counters (blobmount.metrics): request names, what `status` reads, the
setting, and the scrape that reads the store's state on the trio thread."""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import pytest
import trio
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from blobmount.config import load_config, parse_address
from blobmount.errors import BlobmountError, ConfigError
from blobmount.metrics import Metrics, Snapshot, check_address, remote_op

BLOB = "https://acct.blob.core.windows.net/c/dir/file.txt"
CONTAINER = "https://acct.blob.core.windows.net/c"


@pytest.mark.parametrize(("method", "url", "headers", "op"), [
    ("GET", BLOB, {}, "get"),
    ("GET", f"{BLOB}?sv=2022&sig=x", {"x-ms-range": "bytes=0-9"}, "get"),
    ("HEAD", BLOB, {}, "head"),
    ("GET", f"{CONTAINER}?restype=container&comp=list&delimiter=%2F&prefix=a%2F", {}, "list"),
    ("PUT", BLOB, {"Content-Length": "5"}, "put"),
    ("PUT", f"{BLOB}?comp=block&blockid=QUFB", {}, "put_block"),
    ("PUT", f"{BLOB}?comp=blocklist", {}, "put_block_list"),
    ("PUT", BLOB, {"x-ms-copy-source": f"{BLOB}?sig=x"}, "copy"),
    ("PUT", BLOB, {"X-Ms-Copy-Source": BLOB}, "copy"),
    ("DELETE", BLOB, {}, "delete"),
    ("PUT", f"{BLOB}?comp=metadata", {}, "set_metadata"),
    ("GET", f"{BLOB}?comp=tags", {}, "get_tags"),
    ("PUT", f"{BLOB}?comp=tags", {}, "set_tags"),
    ("PUT", f"{CONTAINER}?restype=container", {}, "create_container"),
    ("GET", f"{CONTAINER}?restype=container", {}, "get_container"),
    ("DELETE", f"{CONTAINER}?restype=container", {}, "delete_container"),
])
def test_each_request_has_its_name(method, url, headers, op):
    assert remote_op(method, url, headers) == op


def test_status_reads_requests_by_op_and_status():
    metrics = Metrics()
    metrics.remote_request("GET", BLOB, {}, 200, 0.01, received=5)
    metrics.remote_request("GET", BLOB, {}, 404, 0.01, received=200)  # an error's body
    metrics.remote_request("HEAD", BLOB, {}, None, 10.0)
    metrics.remote_request("PUT", BLOB, {}, 201, 0.02, sent=7)
    metrics.azcopy_job("BlobLocal", listed=True)
    metrics.azcopy_bytes("BlobLocal", 1000)
    assert metrics.requests() == {
        "total": 4, "by_op": {"get": 2, "head": 1, "put": 1},
        "by_status": {"200": 1, "404": 1, "error": 1, "201": 1},
        "bytes": {"down": 1005, "up": 7}, "azcopy_jobs": {"prefetch": 1},
    }


def test_fuse_errors_are_named_by_errno():
    metrics = Metrics()
    metrics.fuse_request("lookup", 0.001, errno.ENOENT)
    metrics.fuse_request("lookup", 0.001, None)
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(metrics.registry).decode())}
    requests = {s.labels["op"]: s.value for s in families["blobmount_fuse_requests"].samples
                if s.name.endswith("_total")}
    assert requests == {"lookup": 2}
    errors = [(s.labels, s.value) for s in families["blobmount_fuse_errors"].samples
              if s.name.endswith("_total")]
    assert errors == [({"op": "lookup", "errno": "ENOENT"}, 1)]
    seconds = {s.name: s.value for s in families["blobmount_fuse_request_seconds"].samples}
    assert seconds["blobmount_fuse_request_seconds_count"] == 2


def test_a_scrape_reads_the_store_on_the_trio_thread():
    """The HTTP server scrapes from its own thread; the snapshot runs on trio's."""
    metrics = Metrics()
    seen = []

    def snapshot() -> Snapshot:
        seen.append(threading.current_thread())
        return Snapshot(cache_bytes={"data": 42}, uploads_pending={"data": 2},
                        uploads_failed={"data": 1}, evictions=3)

    async def main() -> bytes:
        metrics.watch(snapshot)
        return await trio.to_thread.run_sync(generate_latest, metrics.registry)

    text = trio.run(main).decode()
    assert seen == [threading.main_thread()]
    values = {(s.name, tuple(s.labels.values())): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert values[("blobmount_cache_bytes", ("data",))] == 42
    assert values[("blobmount_uploads_pending", ("data",))] == 2
    assert values[("blobmount_uploads_failed", ("data",))] == 1
    assert values[("blobmount_evictions_total", ())] == 3


def test_a_scrape_after_the_daemon_stopped_shows_the_counters_alone():
    metrics = Metrics()

    async def main() -> None:
        metrics.watch(Snapshot)

    trio.run(main)
    text = generate_latest(metrics.registry).decode()
    assert "blobmount_cache_hits_total 0.0" in text
    assert "blobmount_cache_bytes{" not in text


def test_the_endpoint_serves_and_a_taken_port_is_one_line():
    metrics = Metrics()
    url = metrics.serve("127.0.0.1", 0)
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        other = Metrics()
        with pytest.raises(Exception, match=rf"^metrics_address 127.0.0.1:{port}: cannot"
                                            r" listen there \(.+\)$"):
            other.serve("127.0.0.1", port)
    finally:
        metrics.close()


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:9464", ("::1", 9464)),
    ("localhost:80", ("localhost", 80)),
])
def test_addresses(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["9464", ":9464", "host:", "host:port", "host:70000", 9464])
def test_bad_addresses_are_one_line_naming_the_key(tmp_path: Path, text):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "metrics_address": text,
        "accounts": {"a": {"account_name": "acct", "account_key": "a2V5"}},
        "mounts": [{"local": "d", "account": "a", "container": "research"}]}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "metrics_address" in message and "HOST:PORT" in message and "\n" not in message


def test_the_endpoint_is_off_by_default(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "accounts": {"a": {"account_name": "acct", "account_key": "a2V5"}},
        "mounts": [{"local": "d", "account": "a", "container": "research"}]}))
    assert load_config(path).settings.metrics_address is None


def test_check_says_whether_the_address_can_be_listened_on():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BlobmountError, match=r"^cannot listen there \(.+\)$"):
            check_address("127.0.0.1", port)
    assert check_address("127.0.0.1", port).startswith("free")
