"""Ranged downloads (azure/ranges.py) as trio tasks: each range's GET in a worker thread
under the caller's limiter, the bytes in place, If-Match, cuts asked for again, the
Content-MD5 check and progress. The GETs are answered in memory (`FakeService`); what
is under test is `Remote`'s own code above `_send_get`."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
from collections.abc import Iterator
from functools import partial

import pytest
import trio
from azure.core.exceptions import IncompleteReadError

from blobmount import decide
from blobmount.azure import AsyncContainer, Remote
from blobmount.azure import ranges as ranges_module
from blobmount.config import AZURITE_KEY, Account
from blobmount.errors import RemoteCorrupt
from blobmount.threads import Threads

from .fakeremote import FakeRemote

KiB = 1024
RANGE = 64 * KiB  # the smallest range here (RANGE_MIN is 4 MiB), to keep the tests quick
SIZE = 4 * RANGE  # four ranges at a concurrency of 4
ETAG = '"0x8DC0FFEE"'
CHUNK = 16 * KiB


class FakeResponse:
    def __init__(self, service: FakeService, data: bytes, headers: dict[str, str],
                 cut_after: int | None) -> None:
        self._service = service
        self._data = data
        self.headers = headers
        self.status_code = 206
        self._cut_after = cut_after
        self._closed = False

    def iter_bytes(self) -> Iterator[bytes]:
        sent = 0
        for offset in range(0, len(self._data), CHUNK):
            if self._cut_after is not None and sent >= self._cut_after:
                raise IncompleteReadError(message="cut short")
            chunk = self._data[offset:offset + CHUNK]
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        if not self._closed:  # as the SDK's: a second close does nothing
            self._closed = True
            self._service.closed()


class FakeService:
    """Answers ranged GETs of one blob; notes the headers of each, how many are open at
    once, and how many tokens the caller's limiter had lent out while each was."""

    def __init__(self, data: bytes, *, md5: bytes | None = None) -> None:
        self.data = data
        self.md5 = hashlib.md5(data).digest() if md5 is None else md5
        self.limiter: trio.CapacityLimiter | None = None
        self.requests: list[dict[str, str]] = []
        self.cuts: dict[int, int] = {}  # range start -> bytes sent before cutting it once
        self._lock = threading.Lock()
        self.open = 0
        self.most_open = 0
        self.uncounted = 0  # GETs made while the limiter lent fewer tokens than were open

    def get(self, url: str, headers: dict[str, str]) -> FakeResponse:
        first, _, last = headers["x-ms-range"].removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last) + 1, len(self.data))
        with self._lock:
            self.requests.append(dict(headers))
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            if self.limiter is not None and self.limiter.borrowed_tokens < self.open:
                self.uncounted += 1
            cut = self.cuts.pop(start, None)
        answer = {"Content-Range": f"bytes {start}-{end - 1}/{len(self.data)}", "ETag": ETAG,
                  "Last-Modified": "Tue, 01 Dec 2026 09:00:00 GMT",
                  "x-ms-blob-content-md5": base64.b64encode(self.md5).decode()}
        return FakeResponse(self, self.data[start:end], answer, cut)

    def closed(self) -> None:
        with self._lock:
            self.open -= 1


@pytest.fixture
def remote(monkeypatch) -> Iterator[Remote]:
    monkeypatch.setattr(ranges_module, "backoff", lambda attempt: 0.0)  # no waits
    monkeypatch.setattr(decide, "RANGE_MIN", RANGE)
    monkeypatch.setattr(ranges_module, "SMALL_GET_MAX", RANGE)
    made = Remote(Account(name="main", account_name="acct", endpoint="http://127.0.0.1:1/acct",
                          account_key=AZURITE_KEY), "data")
    yield made
    made.close()


def serve(monkeypatch, remote: Remote, service: FakeService) -> None:
    monkeypatch.setattr(remote, "_send_get", service.get)


@pytest.fixture(scope="module")
def blob() -> bytes:
    return random.Random(17).randbytes(SIZE)  # each range different: misplaced bytes show


def test_each_range_is_counted_by_the_callers_limiter(monkeypatch, remote, blob, tmp_path):
    service = FakeService(blob)
    serve(monkeypatch, remote, service)
    target = tmp_path / "blob"

    async def main() -> None:
        service.limiter = trio.CapacityLimiter(2)
        await remote.download_async("b", target, size=SIZE, concurrency=4,
                                    limiter=service.limiter)

    trio.run(main)
    assert target.read_bytes() == blob
    assert len(service.requests) == 4  # the first range, then the other three
    assert service.uncounted == 0 and service.most_open <= 2
    assert all(request["If-Match"] == ETAG for request in service.requests[1:])


def test_the_face_lends_its_limiter_to_each_range(monkeypatch, remote, blob, tmp_path):
    """AsyncContainer.download: the ranges hold tokens of the daemon's one limiter."""
    service = FakeService(blob)
    serve(monkeypatch, remote, service)
    target = tmp_path / "blob"

    async def main() -> None:
        threads = Threads(2)
        service.limiter = threads.limiter
        await AsyncContainer(remote, threads).download("b", target, size=SIZE, concurrency=4)

    trio.run(main)
    assert target.read_bytes() == blob
    assert len(service.requests) == 4
    assert service.uncounted == 0 and service.most_open <= 2


def test_a_limiter_of_one_makes_the_ranges_go_one_by_one(monkeypatch, remote, blob, tmp_path):
    service = FakeService(blob)
    serve(monkeypatch, remote, service)

    async def main() -> None:
        service.limiter = trio.CapacityLimiter(1)
        await remote.download_async("b", tmp_path / "blob", size=SIZE, concurrency=4,
                                    limiter=service.limiter)

    trio.run(main)
    assert service.most_open == 1 and service.uncounted == 0


def test_a_range_cut_short_asks_for_the_rest_of_that_version(monkeypatch, remote, blob,
                                                              tmp_path):
    service = FakeService(blob)
    service.cuts[2 * RANGE] = CHUNK  # the third range: a chunk arrives, then it stops
    serve(monkeypatch, remote, service)
    target = tmp_path / "blob"
    trio.run(partial(remote.download_async, "b", target, size=SIZE, concurrency=4,
                     limiter=trio.CapacityLimiter(4)))
    assert target.read_bytes() == blob
    assert len(service.requests) == 5  # four ranges, and the rest of the one cut short
    again = [request for request in service.requests
             if request["x-ms-range"] == f"bytes={2 * RANGE + CHUNK}-{3 * RANGE - 1}"]
    assert len(again) == 1 and again[0]["If-Match"] == ETAG


def test_bytes_that_do_not_match_the_md5_are_tried_again_then_refused(monkeypatch, remote,
                                                                      blob, tmp_path):
    service = FakeService(blob, md5=hashlib.md5(b"something else").digest())
    serve(monkeypatch, remote, service)
    target = tmp_path / "blob"
    with pytest.raises(RemoteCorrupt, match="do not match the blob's Content-MD5"):
        trio.run(partial(remote.download_async, "b", target, size=SIZE,
                         limiter=trio.CapacityLimiter(4)))
    assert len(service.requests) == 8  # two tries of four ranges
    assert not target.exists()


def test_progress_says_how_much_of_the_start_is_in_place(monkeypatch, remote, blob, tmp_path):
    service = FakeService(blob)
    serve(monkeypatch, remote, service)
    target = tmp_path / "blob"
    seen: list[int] = []

    def progress(ready: int) -> None:
        with open(target, "rb") as written:  # the last bytes said to be in place are
            start = max(0, ready - 4096)
            assert os.pread(written.fileno(), ready - start, start) == blob[start:ready]
        seen.append(ready)

    trio.run(partial(remote.download_async, "b", target, size=SIZE, on_progress=progress,
                     limiter=trio.CapacityLimiter(4)))
    assert seen == sorted(seen) and seen[-1] == SIZE


def test_the_blocking_download_runs_its_ranges_in_a_loop_of_its_own(monkeypatch, remote, blob,
                                                                    tmp_path):
    """`download`, as a trio program calls it today: from a worker thread."""
    service = FakeService(blob)
    serve(monkeypatch, remote, service)
    target = tmp_path / "blob"

    async def main() -> None:
        item = await trio.to_thread.run_sync(partial(remote.download, "b", target, size=SIZE))
        assert item.size == SIZE and item.etag == ETAG.strip('"')

    trio.run(main)
    assert target.read_bytes() == blob
    assert len(service.requests) == 4 and service.open == 0


def test_a_fake_remote_gets_download_async_made_of_its_download(tmp_path):
    fake = FakeRemote()
    fake.put_elsewhere("b", b"bytes")
    limiter = trio.CapacityLimiter(1)
    target = tmp_path / "b"

    async def main() -> None:
        item = await fake.download_async("b", target, size=5, limiter=limiter)
        assert item.size == 5

    trio.run(main)
    assert target.read_bytes() == b"bytes" and fake.calls == [("download", "b")]
