"""Downloads: a small blob by one GET, a large one in ranges side by side streamed
into place (its first bytes readable while the rest arrive), ranges of a version by
If-Match, every body checked against the MD5 the service keeps or computes."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import trio
from azure.core.exceptions import HttpResponseError, IncompleteReadError, ServiceResponseError
from azure.core.rest import HttpResponse

# One bare GET (Remote._get_whole) up to SMALL_GET_MAX, ranges above, of range_size
# each: decide.py says why.
from ..decide import RANGE_MD5_MAX, SMALL_GET_MAX, range_size
from ..errors import RemoteConflict, RemoteCorrupt, RemoteUnreachable
from .base import ContainerBase
from .listing import BlobItem, item_from_headers
from .transport import RETRIES, backoff

log = logging.getLogger("blobmount.azure")

# A download whose bytes do not match the blob's Content-MD5 is tried this many times.
DOWNLOAD_TRIES = 2
# A download's ranges are hashed in pieces of this size, as they arrive.
HASH_BLOCK = 1024 * 1024
RANGE_NOT_SATISFIABLE = 416
PRECONDITION_FAILED = 412


def _wait_after_cut(cuts: int, what: str) -> None:
    """Before asking again for an answer cut short `cuts` times: RemoteUnreachable past
    RETRIES, else the backoff."""
    if cuts > RETRIES:
        raise RemoteUnreachable(f"{what}: the answer was cut short {cuts} times")
    log.debug("%s: answer cut short, asking again for what is missing", what)
    time.sleep(backoff(cuts))


#: A download's result: the blob as read, its Content-MD5 (None: it has none) and the
#: MD5 of the bytes written (None: not computed, as there is nothing to match).
_Result = tuple[BlobItem, str | None, str | None]


def _ignore_progress(_ready: int) -> None:
    pass


class Downloads(ContainerBase):
    """The downloads of a container (a part of Remote)."""

    def _get(self, url: str, headers: Mapping[str, str], what: str,
             ) -> tuple[Mapping[str, str], bytes]:
        """One bare GET through the pipeline (auth, retries, timeouts): the answer's
        headers and body. A body cut short is asked for again, up to RETRIES times (the
        pipeline retries only failures before the body)."""
        cuts = 0
        while True:
            response = self._send_get(url, headers)
            try:
                body = b"".join(response.iter_bytes())
                complete = len(body) == int(response.headers.get("Content-Length", len(body)))
            except (ServiceResponseError, IncompleteReadError):  # body cut short, or stalled
                complete = False
            finally:
                response.close()
            if complete:
                return response.headers, body
            cuts += 1
            _wait_after_cut(cuts, what)

    def _get_whole(self, blob: str, destination: Path) -> tuple[BlobItem, str | None, str]:
        """A small blob by one GET: the SDK's downloader costs more CPU than the request
        (1.8 ms against 1.1 ms a 4 KiB blob). The blob as read, its Content-MD5 (None:
        it has none) and the bytes' MD5."""
        headers, body = self._get(self._blob_request_url(blob), {},
                                  f"download of {self.label}/{blob}")
        with open(destination, "wb") as out:
            out.write(body)
        md5 = headers.get("Content-MD5") or headers.get("x-ms-blob-content-md5")
        return (item_from_headers(blob, headers, len(body)),
                base64.b64decode(md5).hex() if md5 else None,
                hashlib.md5(body, usedforsecurity=False).hexdigest())

    async def _get_ranges(self, blob: str, destination: Path, size: int | None,
                          concurrency: int, on_progress: Callable[[int], None],
                          limiter: trio.CapacityLimiter) -> _Result:
        """A large blob in `concurrency` ranges side by side (see range_size), each
        streamed into place, so that the file's first bytes can be read while the rest
        arrive: `on_progress(n)` says the first n bytes are written. Each range is a trio
        task whose GET runs in a worker thread under `limiter`, from the request to the
        end of its body, so that the limiter counts every connection; another task
        hashes the prefix as it grows. The first range's answer says how large the blob
        is; the ranges after it ask for the version it got (If-Match); a range cut short
        asks again for what it lacks. The blob as read, its Content-MD5 and the bytes'
        MD5 (both None: it has none)."""
        url, what = self._blob_request_url(blob), f"download of {self.label}/{blob}"
        step = range_size(size or 0, concurrency)
        # What the first answer says (set by `plan`, before any range but the first runs).
        headers: Mapping[str, str] = {}
        total = 0
        md5: str | None = None  # on a range, Content-MD5 would be the range's: not that
        if_match: dict[str, str] = {}
        written: dict[int, int] = {}  # range start -> bytes of it written
        lock = threading.Lock()  # over `written` and `prefix`: the ranges' threads write
        prefix = 0     # the first `prefix` bytes are written
        failures: list[Exception] = []
        whole: _Result | None = None  # the answer of an empty blob, by one GET
        digest = hashlib.md5(usedforsecurity=False)
        token = trio.lowlevel.current_trio_token()
        grown = trio.Event()  # set when `prefix` grows; a new one for each wait

        def wrote(start: int, count: int) -> None:  # in a range's worker thread
            nonlocal prefix
            with lock:
                written[start] += count
                base, moved = prefix - prefix % step, prefix  # the first range not all in
                while base < total:
                    moved = base + written[base]
                    if moved < min(base + step, total):
                        break
                    base += step
                if moved <= prefix:
                    return
                prefix = moved
                on_progress(moved)
            token.run_sync_soon(lambda: grown.set())  # it reads `grown` in trio's thread

        def stopped() -> bool:
            return bool(failures)

        def plan(first: Mapping[str, str]) -> None:  # in trio's thread
            nonlocal headers, total, md5, if_match
            headers = first
            total = int(first.get("Content-Range", "/0").rpartition("/")[2])
            md5 = first.get("x-ms-blob-content-md5")
            if_match = {"If-Match": first.get("ETag", "*")}
            written.update(dict.fromkeys(range(0, total, step), 0))
            # A blob with no Content-MD5 (most put in blocks) has nothing to match.
            if md5:
                hashing.start_soon(hash_prefix)
            for start in range(step, total, step):
                ranges.start_soon(fetch, start)

        def first_range() -> _Result | None:  # in a worker thread
            try:
                first = self._send_get(url, {"x-ms-range": f"bytes=0-{step - 1}"})
            except HttpResponseError as exc:
                if exc.status_code != RANGE_NOT_SATISFIABLE:
                    raise
                return self._get_whole(blob, destination)  # empty since it was listed
            try:
                trio.from_thread.run_sync(plan, first.headers, trio_token=token)
                self._stream_range(url, fd, 0, min(step, total), if_match, what, wrote,
                                   first, stopped)
            finally:
                first.close()  # closed already, unless the blob is empty
            return None

        async def fetch(start: int) -> None:
            try:
                await trio.to_thread.run_sync(
                    self._stream_range, url, fd, start, min(start + step, total), if_match,
                    what, wrote, None, stopped, limiter=limiter)
            except Exception as exc:  # the others stop at their next block (stopped())
                failures.append(exc)

        async def fetch_first() -> None:
            nonlocal whole
            try:
                whole = await trio.to_thread.run_sync(first_range, limiter=limiter)
            except Exception as exc:
                failures.append(exc)

        def hash_from(done: int, upto: int) -> int:
            while done < upto:
                block = os.pread(fd, min(HASH_BLOCK, upto - done), done)
                digest.update(block)
                done += len(block)
            return done

        async def hash_prefix() -> None:
            nonlocal grown
            done = 0
            try:
                while done < total:
                    grown = trio.Event()
                    with lock:
                        upto = prefix
                    if upto <= done:
                        await grown.wait()
                    else:  # hashing is no connection: trio's own limiter, not the caller's
                        done = await trio.to_thread.run_sync(hash_from, done, upto)
            except Exception as exc:
                failures.append(exc)

        # read too: the hash reads back
        out = await trio.to_thread.run_sync(open, destination, "w+b", limiter=limiter)
        fd = out.fileno()
        try:
            async with trio.open_nursery() as hashing:
                async with trio.open_nursery() as ranges:
                    ranges.start_soon(fetch_first)  # which starts the others (`plan`)
                if failures:
                    hashing.cancel_scope.cancel()  # the hash waits for bytes that won't come
        finally:
            out.close()
        if failures:
            raise failures[0]
        if whole is not None:
            return whole
        if not md5:
            return item_from_headers(blob, headers, total), None, None
        return (item_from_headers(blob, headers, total), base64.b64decode(md5).hex(),
                digest.hexdigest())

    def _stream_range(self, url: str, fd: int, start: int, end: int,
                      if_match: Mapping[str, str], what: str,
                      wrote: Callable[[int, int], None], response: HttpResponse | None,
                      stop: Callable[[], bool]) -> None:
        """Write the blob's bytes [start, end) at their place in `fd`, telling
        `wrote(start, count)` as they land; a body cut short is asked for again from
        where it stopped, up to RETRIES times. `response`: the first try, already sent."""
        position, cuts = start, 0
        while position < end:
            if response is None:
                response = self._send_get(
                    url, {"x-ms-range": f"bytes={position}-{end - 1}", **if_match})
            try:
                for block in response.iter_bytes():
                    if stop():
                        return
                    block = block[:end - position]
                    os.pwrite(fd, block, position)
                    position += len(block)
                    wrote(start, len(block))
            except (ServiceResponseError, IncompleteReadError):  # cut short, or stalled
                pass
            finally:
                response.close()
                response = None
            if position < end:
                cuts += 1
                _wait_after_cut(cuts, what)

    def read_blocks(self, blob: str, fd: int, start: int, end: int, etag: str,
                    block: int) -> list[int]:
        """Write the bytes [start, end) of the blob's version `etag` at their place in
        `fd` by one ranged GET; the CRC-32 of each `block`-sized piece (a cheap check
        that the bytes are still on the disk later; the MD5 checks them on the wire).

        A range of at most RANGE_MD5_MAX is checked against the MD5 the service
        computes of it: a mismatch is asked for again, then RemoteCorrupt. Another
        version in the container: RemoteConflict (If-Match). A body cut short is asked
        for again, up to RETRIES times."""
        what = f"read of {self.label}/{blob}"
        headers = {"x-ms-range": f"bytes={start}-{end - 1}", "If-Match": f'"{etag}"'}
        checked = end - start <= RANGE_MD5_MAX
        if checked:
            headers["x-ms-range-get-content-md5"] = "true"
        url, cuts, bad = self._blob_request_url(blob), 0, 0
        while True:
            with self._call(what):
                try:
                    response = self._send_get(url, headers)
                except HttpResponseError as exc:
                    if exc.status_code == PRECONDITION_FAILED:
                        raise RemoteConflict(f"{what}: changed in the container since it"
                                             " was opened") from None
                    raise
                whole, pieces, complete = self._write_range(response, fd, start, end, block)
            if not complete:
                cuts += 1
                _wait_after_cut(cuts, what)
                continue
            expected = response.headers.get("Content-MD5")
            if not checked or (expected and base64.b64decode(expected) == whole):
                return pieces
            bad += 1
            log.warning("%s: bytes %d-%d do not match their MD5%s", what, start, end - 1,
                        "; trying again" if bad < DOWNLOAD_TRIES else "")
            if bad >= DOWNLOAD_TRIES:
                raise RemoteCorrupt(f"{what}: bytes {start}-{end - 1} do not match their"
                                    f" MD5 (tried {bad} times)")

    @staticmethod
    def _write_range(response: HttpResponse, fd: int, start: int, end: int, block: int,
                     ) -> tuple[bytes, list[int], bool]:
        """Stream a range's body into `fd` at its place: the MD5 of all of it, the
        CRC-32 of each `block`-sized piece, and whether it came whole."""
        whole = hashlib.md5(usedforsecurity=False)
        pieces = [0] * -(-(end - start) // block)
        position = start
        try:
            for data in response.iter_bytes():
                chunk = memoryview(data)[:end - position]
                os.pwrite(fd, chunk, position)
                whole.update(chunk)
                while chunk:  # a chunk may straddle the edge of a block
                    index = (position - start) // block
                    take = min(len(chunk), start + (index + 1) * block - position)
                    pieces[index] = zlib.crc32(chunk[:take], pieces[index])
                    chunk, position = chunk[take:], position + take
        except (ServiceResponseError, IncompleteReadError):  # cut short, or stalled
            pass
        finally:
            response.close()
        return whole.digest(), pieces, position >= end

    def download(self, blob: str, destination: Path, *, size: int | None = None,
                 concurrency: int = 4, on_progress: Callable[[int], None] | None = None,
                 ) -> BlobItem:
        """Write the blob's bytes to `destination` (created or truncated; not fsynced,
        which is the cache's business).

        A blob listed at `size` up to SMALL_GET_MAX comes by one GET, a larger one in
        ranges side by side. Where the blob has a Content-MD5, the bytes written must
        match it: a mismatch is downloaded again, then RemoteCorrupt. Returns the
        properties of the version that was read, so the caller records the ETag of
        exactly these bytes.

        With `on_progress`, the file's first bytes can be read while the rest arrive:
        it is called (from worker threads) with n whenever the first n bytes are
        written. Such a download is tried once, since bytes already read cannot be
        taken back.

        This is `download_async` in a trio loop of this thread's own, under a limiter
        of its own (the daemon calls `download_async`, under the caller's).
        """
        return trio.run(partial(self.download_async, blob, destination, size=size,
                                concurrency=concurrency, on_progress=on_progress,
                                limiter=trio.CapacityLimiter(concurrency)))

    async def download_async(self, blob: str, destination: Path, *, size: int | None = None,
                             concurrency: int = 4,
                             on_progress: Callable[[int], None] | None = None,
                             limiter: trio.CapacityLimiter) -> BlobItem:
        """`download`, from trio: each blocking call (the one GET of a small blob, each
        range's of a large one) runs in a worker thread under `limiter`, so that it
        counts every connection the download makes (`concurrency` at most)."""
        tries = 1 if on_progress else DOWNLOAD_TRIES
        for attempt in range(tries):
            with self._call(f"download of {self.label}/{blob}"):
                if size is not None and size <= SMALL_GET_MAX:
                    result: _Result = await trio.to_thread.run_sync(
                        self._get_whole, blob, destination, limiter=limiter)
                else:
                    result = await self._get_ranges(blob, destination, size, concurrency,
                                                    on_progress or _ignore_progress, limiter)
            if self._matches(blob, result, retrying=attempt + 1 < tries):
                return result[0]
        raise self._corrupt(blob, destination, result, tries)

    def _matches(self, blob: str, result: _Result, *, retrying: bool) -> bool:
        """Whether a download's bytes match the blob's Content-MD5 (or it has none)."""
        _, expected, actual = result
        if expected is None or actual == expected:
            return True
        log.warning("download of %s/%s: the bytes do not match its Content-MD5%s",
                    self.label, blob, "; trying again" if retrying else "")
        return False

    def _corrupt(self, blob: str, destination: Path, result: _Result, tries: int,
                 ) -> RemoteCorrupt:
        """The error of a download whose every try mismatched; its bytes are deleted."""
        destination.unlink(missing_ok=True)
        return RemoteCorrupt(f"download of {self.label}/{blob}: the bytes do not match the"
                             f" blob's Content-MD5 {result[1]} (tried {tries} times)")

    def read_range(self, blob: str, offset: int, length: int | None) -> bytes:
        """`length` bytes of the blob from `offset` (None: to its end), by one GET."""
        with self._call(f"read of {self.label}/{blob}"):
            return self._client.get_blob_client(blob).download_blob(
                offset=offset, length=length).readall()

