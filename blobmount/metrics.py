"""What a daemon counts (FUSE requests, requests to the account, AzCopy jobs, the cache)
and the Prometheus endpoint (`metrics_address`) that shows it.

Each daemon has its own `Metrics` and registry (never prometheus_client's global one).
Counters are bumped where things happen: the FUSE handlers' decorator (fs.py), the
SDK's HTTP transport (azure/transport.py: every try of every request, retries
included), AzCopy jobs (azcopy.py). What the store knows (cached bytes, the journal) is
read when Prometheus asks, on the daemon's trio thread (see `watch`).
"""

from __future__ import annotations

import errno as errno_names
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import BlobmountError

log = logging.getLogger(__name__)

# Warm FUSE requests take tens of microseconds, cold ones a round trip or a download.
FUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REMOTE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0, 60.0)
# AzCopy's --from-to, as the kind of job it is.
_AZCOPY_KINDS = {"BlobLocal": "download", "LocalBlob": "upload"}
_METHODS = {"GET": "get", "HEAD": "head", "PUT": "put", "DELETE": "delete"}


def remote_op(method: str, url: str, headers: Mapping[str, str]) -> str:
    """The name of a request to Blob Storage, from its method, query and headers:
    get, head, list, put, put_block, put_block_list, copy, delete, set_metadata, ..."""
    query = dict(parse_qsl(urlsplit(url).query))
    comp = query.get("comp", "")
    writes = method in ("PUT", "POST")
    if comp == "list":
        return "list"
    if comp == "block":
        return "put_block"
    if comp == "blocklist":
        return "put_block_list" if writes else "get_block_list"
    if comp:
        return f"{'set' if writes else 'get'}_{comp}"  # set_metadata, get_tags, ...
    if query.get("restype") == "container":
        return {"PUT": "create_container", "DELETE": "delete_container"}.get(
            method, "get_container")
    if method == "PUT" and any(key.lower() == "x-ms-copy-source" for key in headers):
        return "copy"
    return _METHODS.get(method, method.lower())


def check_address(host: str, port: int) -> str:
    """For `blobmount check`: BlobmountError (saying why) unless host:port can be
    listened on now."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server
            probe.bind(address)
    except OSError as exc:
        raise BlobmountError(_cannot_listen(exc)) from None
    return "free: /metrics will be served there"


def _cannot_listen(exc: OSError) -> str:
    return f"cannot listen there ({exc.strerror or exc})"


@dataclass
class Snapshot:
    """What the store knows, by mount entry (its `local` folder), read at scrape time."""

    cache_bytes: dict[str, int] = field(default_factory=dict)
    uploads_pending: dict[str, int] = field(default_factory=dict)
    uploads_failed: dict[str, int] = field(default_factory=dict)
    evictions: int = 0


class _Live(Collector):
    """The Snapshot's families, read on the daemon's trio thread: the store's sqlite
    connection belongs to it, and the HTTP server asks from a thread of its own."""

    def __init__(self, read: Callable[[], Snapshot], token: trio.lowlevel.TrioToken) -> None:
        self._read = read
        self._token = token

    def describe(self) -> list[Metric]:
        return self._families(Snapshot())

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = trio.from_thread.run_sync(self._read, trio_token=self._token)
        except trio.RunFinishedError:
            return iter(())  # the daemon is stopping
        except Exception as exc:  # a scrape must never take the daemon down
            log.warning("metrics: cannot read the cache's state: %s", exc)
            return iter(())
        return iter(self._families(snapshot))

    @staticmethod
    def _families(snapshot: Snapshot) -> list[Metric]:
        families: list[Metric] = []
        for name, doc, values in (
            ("blobmount_cache_bytes", "Bytes of cached copies, by mount entry.",
             snapshot.cache_bytes),
            ("blobmount_uploads_pending", "Files waiting in the upload journal, by mount"
             " entry.", snapshot.uploads_pending),
            ("blobmount_uploads_failed", "Journaled files whose upload failed at least"
             " once, by mount entry.", snapshot.uploads_failed),
        ):
            family = GaugeMetricFamily(name, doc, labels=["entry"])
            for entry, value in values.items():
                family.add_metric([entry], value)
            families.append(family)
        families.append(CounterMetricFamily(
            "blobmount_evictions", "Cached copies dropped (limits, cache evict/clear).",
            value=snapshot.evictions))
        return families


class Metrics:
    """One daemon's counters, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.fuse_requests = Counter(
            "blobmount_fuse_requests", "FUSE requests answered, by operation.", ["op"],
            registry=registry)
        self.fuse_errors = Counter(
            "blobmount_fuse_errors", "FUSE requests answered with an error, by operation"
            " and errno.", ["op", "errno"], registry=registry)
        self.fuse_seconds = Histogram(
            "blobmount_fuse_request_seconds", "Time to answer a FUSE request.", ["op"],
            buckets=FUSE_BUCKETS, registry=registry)
        self.remote_requests = Counter(
            "blobmount_remote_requests", "HTTP requests to the account (each try), by"
            " operation and status ('error': no answer).", ["op", "status"],
            registry=registry)
        self.remote_seconds = Histogram(
            "blobmount_remote_request_seconds", "Time from a request to its answer's"
            " headers.", ["op"], buckets=REMOTE_BUCKETS, registry=registry)
        self.remote_bytes = Counter(
            "blobmount_remote_bytes", "Body bytes of successful requests and AzCopy jobs:"
            " down (from the account) and up.", ["direction"], registry=registry)
        self.azcopy_jobs = Counter(
            "blobmount_azcopy_jobs", "AzCopy jobs started, by kind (download, upload,"
            " prefetch).", ["kind"], registry=registry)
        self.cache_hits = Counter(
            "blobmount_cache_hits", "Opens served by a cached copy.", registry=registry)
        self.cache_misses = Counter(
            "blobmount_cache_misses", "Opens that waited for a download.", registry=registry)
        self.conflicts = Counter(
            "blobmount_conflicts", "Uploads that found the blob changed in the container"
            " (the local bytes went up as a conflict copy).", registry=registry)
        # Bound children per op: labels() costs as much again as inc() itself, and
        # every FUSE request passes here.
        self._fuse: dict[str, tuple[Any, Any]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None

    # -- counting ---------------------------------------------------------------------

    def fuse_request(self, op: str, seconds: float, errno: int | None) -> None:
        """One FUSE request answered, with an errno if it failed."""
        pair = self._fuse.get(op)
        if pair is None:
            pair = self._fuse[op] = (self.fuse_requests.labels(op),
                                     self.fuse_seconds.labels(op))
        pair[0].inc()
        pair[1].observe(seconds)
        if errno is not None:
            self.fuse_errors.labels(op, errno_names.errorcode.get(errno, str(errno))).inc()

    def remote_request(self, method: str, url: str, headers: Mapping[str, str],
                       status: int | None, seconds: float, *, sent: int = 0,
                       received: int = 0) -> None:
        """One try of a request to the account; `status` None: no answer came."""
        op = remote_op(method, url, headers)
        self.remote_requests.labels(op, "error" if status is None else str(status)).inc()
        self.remote_seconds.labels(op).observe(seconds)
        if status is not None and status < 300:
            if received:
                self.remote_bytes.labels("down").inc(received)
            if sent:
                self.remote_bytes.labels("up").inc(sent)

    def azcopy_job(self, from_to: str, *, listed: bool) -> None:
        """An AzCopy job started; `listed`: it copies a list of files (a prefetch batch)."""
        kind = "prefetch" if listed else _AZCOPY_KINDS.get(from_to, from_to.lower())
        self.azcopy_jobs.labels(kind).inc()

    def azcopy_bytes(self, from_to: str, count: int) -> None:
        if count > 0:
            self.remote_bytes.labels("up" if from_to == "LocalBlob" else "down").inc(count)

    def cache_open(self, downloaded: bool) -> None:
        """An open that needed a file's bytes: a miss if it had to download them."""
        (self.cache_misses if downloaded else self.cache_hits).inc()

    # -- reading ----------------------------------------------------------------------

    def requests(self) -> dict[str, Any]:
        """What `status` shows: the requests to the account so far, by op and status,
        and the bytes moved."""
        by_op: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for sample in _samples(self.remote_requests, "_total"):
            count = int(sample.value)
            op, status = sample.labels["op"], sample.labels["status"]
            by_op[op] = by_op.get(op, 0) + count
            by_status[status] = by_status.get(status, 0) + count
        moved = {direction: 0 for direction in ("down", "up")}
        for sample in _samples(self.remote_bytes, "_total"):
            moved[sample.labels["direction"]] = int(sample.value)
        jobs = {sample.labels["kind"]: int(sample.value)
                for sample in _samples(self.azcopy_jobs, "_total")}
        return {"total": sum(by_op.values()), "by_op": by_op, "by_status": by_status,
                "bytes": moved, "azcopy_jobs": jobs}

    # -- the endpoint -----------------------------------------------------------------

    def watch(self, read: Callable[[], Snapshot]) -> None:
        """Show `read()`'s Snapshot at each scrape. Call from the daemon's trio thread:
        `read` runs there."""
        self.registry.register(_Live(read, trio.lowlevel.current_trio_token()))

    def serve(self, host: str, port: int) -> str:
        """Serve /metrics on host:port from a thread of its own (port 0: any free
        one); the URL it answers at."""
        try:
            self._server, self._thread = start_http_server(port, addr=host,
                                                           registry=self.registry)
        except OSError as exc:
            reason = _cannot_listen(exc)
            raise BlobmountError(f"metrics_address {host}:{port}: {reason}") from None
        bound_host, bound_port = self._server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.address = f"http://{shown}:{bound_port}/metrics"
        log.info("metrics at %s", self.address)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _samples(metric: Counter, suffix: str) -> Iterator[Any]:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample
