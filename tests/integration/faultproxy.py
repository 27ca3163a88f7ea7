"""A TCP proxy between blobmount and Azurite that breaks the network on command.

Each connection carries one request: the proxy adds `Connection: close` to it, so it
can count requests and answer one itself without parsing HTTP any further. Modes:

- `forward`: pass bytes both ways (the default);
- `drop`: close every connection as soon as it is accepted (and those open now);
- `stall`: read the request and answer nothing, holding the connection open until
  the next `set_mode`;
- `cut`: forward the request, pass `cut_after` bytes of the answer, then close.

- `corrupt`: forward, flipping the first byte of each answer's body (the headers,
  Content-MD5 among them, pass as they are).

`fail_next(status, times)` answers the next `times` requests with that HTTP status and
an Azure-style error body, `cut_next(after, times)` cuts the next answers short and
`stall_next(times)` stalls the next requests, whatever the mode (each optionally for
one method only), `corrupt_next(times)` corrupts the next answers; then the mode
applies again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter

HEAD_END = b"\r\n\r\n"
REASONS = {403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 409: "Conflict",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Server Busy"}
ERROR_CODES = {403: "AuthenticationFailed", 404: "BlobNotFound", 408: "OperationTimedOut",
               409: "ResourceAlreadyExists", 429: "ServerBusy", 500: "InternalError",
               503: "ServerBusy"}


class FaultProxy:
    """Listens on a free loopback port; forwards to `target_port` on 127.0.0.1."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "forward"
        self.cut_after = 0
        self._epoch = 0  # set_mode calls so far: a stall lasts until the next one
        #: requests seen, by "METHOD path" (the path without its query)
        self.requests: Counter[str] = Counter()
        #: connections accepted so far, whatever became of them
        self.connections = 0
        #: bytes of requests passed on to Azurite (head and body), by method
        self.sent: Counter[str] = Counter()
        #: requests that copy from another blob server-side (an x-ms-copy-source header:
        #: Put Block From URL, Copy Blob), by "METHOD path"
        self.copies: Counter[str] = Counter()
        # ("status", code, method) or ("cut", bytes, method); method None: any request
        self._next: list[tuple[str, int, str | None]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open: set[socket.socket] = set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.port}/{account}"

    def set_mode(self, mode: str, *, cut_after: int = 0) -> None:
        """Change the mode; `drop` also closes the connections open now."""
        assert mode in ("forward", "drop", "stall", "cut", "corrupt"), mode
        with self._lock:
            self.mode = mode
            self.cut_after = cut_after
            self._epoch += 1
            doomed = list(self._open) if mode == "drop" else []
            self._changed.notify_all()
        for connection in doomed:
            _close(connection)

    def fail_next(self, status: int, times: int = 1, *, method: str | None = None) -> None:
        """Answer the next `times` requests (of `method`, if given) with `status`."""
        with self._lock:
            self._next.extend([("status", status, method)] * times)

    def cut_next(self, after: int, times: int = 1, *, method: str | None = None) -> None:
        """Pass only `after` bytes of the next `times` answers (to `method` requests, if
        given); the request itself reaches Azurite whole, and is carried out."""
        with self._lock:
            self._next.extend([("cut", after, method)] * times)

    def corrupt_next(self, times: int = 1, *, method: str | None = None) -> None:
        """Flip the first body byte of the next `times` answers (to `method` requests,
        if given)."""
        with self._lock:
            self._next.extend([("corrupt", 0, method)] * times)

    def forward_next(self, times: int = 1, *, method: str | None = None) -> None:
        """Forward the next `times` requests (of `method`, if given) whatever the mode:
        faults queued after this one then fall on the requests after them."""
        with self._lock:
            self._next.extend([("forward", 0, method)] * times)

    def stall_next(self, times: int = 1, *, method: str | None = None) -> None:
        """Stall the next `times` requests (of `method`, if given) until set_mode."""
        with self._lock:
            self._next.extend([("stall", 0, method)] * times)

    def count(self, method: str, path_end: str) -> int:
        """Requests seen whose method is `method` and whose path ends with `path_end`."""
        with self._lock:
            return sum(n for key, n in self.requests.items()
                       if key.startswith(method + " ") and key.endswith(path_end))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            doomed = list(self._open)
            self._changed.notify_all()
        _close(self._listener)
        for connection in doomed:
            _close(connection)
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the proxy's threads --------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    _close(client)
                    return
                self._open.add(client)
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            with self._lock:
                mode = self.mode
            if mode == "drop":
                return
            head, rest = _read_head(client)
            if head is None:
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target = (request_line.split(" ") + ["", ""])[:2]
            with self._lock:
                self.requests[f"{method} {target.split('?', 1)[0]}"] += 1
                if b"\r\nx-ms-copy-source:" in head.lower():
                    self.copies[f"{method} {target.split('?', 1)[0]}"] += 1
                fault, value = self._fault_for(method)
                epoch = self._epoch
            if fault == "status":
                client.sendall(_error_response(value))
                return
            if fault == "stall":
                with self._lock:
                    self._changed.wait_for(lambda: self._closed or self._epoch != epoch)
                return
            if fault == "drop":
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open.add(upstream)
            first = _close_after(head) + rest
            upstream.sendall(first)
            self._count_sent(method, len(first))
            pump = threading.Thread(target=_pump, args=(client, upstream, None), daemon=True,
                                    kwargs={"on_bytes": lambda n: self._count_sent(method, n)})
            pump.start()
            _pump(upstream, client, value if fault == "cut" else None,
                  corrupt=fault == "corrupt")
        except OSError:
            pass
        finally:
            for connection in (client, upstream):
                if connection is not None:
                    with self._lock:
                        self._open.discard(connection)
                    _close(connection)


    def _count_sent(self, method: str, count: int) -> None:
        with self._lock:
            self.sent[method] += count

    def _fault_for(self, method: str) -> tuple[str, int]:
        """What to do with a request: the first queued fault that fits it, else the mode.
        Call it holding the lock."""
        for index, (fault, value, only) in enumerate(self._next):
            if only is None or only == method:
                del self._next[index]
                return fault, value
        return self.mode, self.cut_after


def _read_head(connection: socket.socket) -> tuple[bytes | None, bytes]:
    """The request's head (through the blank line) and whatever body came with it."""
    data = b""
    while HEAD_END not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(HEAD_END)
    return head + HEAD_END, rest


def _close_after(head: bytes) -> bytes:
    """The head with `Connection: close`, so this connection carries one request."""
    lines = [line for line in head[:-len(HEAD_END)].split(b"\r\n")
             if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + HEAD_END


def _pump(source: socket.socket, sink: socket.socket, limit: int | None, *,
          corrupt: bool = False, on_bytes=lambda count: None) -> None:
    """Copy bytes until `source` ends, passing only the first `limit` of them (all, if
    None), then close both directions, so the other pump ends too. Reading `source` to
    its end lets Azurite finish what the request asked, as a server would when only
    its answer is lost."""
    passed = 0
    head = b""  # while corrupting: the answer's head so far
    try:
        while chunk := source.recv(65536):
            if corrupt:
                head += chunk
                body = head.find(HEAD_END) + len(HEAD_END)
                if body < len(HEAD_END) or body >= len(head):
                    continue  # no body byte yet: hold the bytes back
                chunk = head[:body] + bytes([head[body] ^ 0xFF]) + head[body + 1:]
                corrupt = False
            if limit is not None:
                chunk = chunk[:max(0, limit - passed)]
            if chunk:
                sink.sendall(chunk)
                on_bytes(len(chunk))
            passed += len(chunk)
    except OSError:
        pass
    finally:
        for connection in (source, sink):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _error_response(status: int) -> bytes:
    code = ERROR_CODES.get(status, "InternalError")
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the fault proxy</Message></Error>").encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"x-ms-error-code: {code}\r\nConnection: close\r\n\r\n").encode()
    return head + body


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()
