"""A counting HTTP proxy on loopback, between a peer (rclone) and Azurite.

Keeps connections alive on both sides, as the peer would with Azurite itself, and
names each request as blobmount's own metrics do (`blobmount.metrics.remote_op`), so
the two tools' counts compare op by op. Each request is also logged (method, path,
`comp` and a listing's prefix, status), to see which names a workload asked for.

Azurite checks the source of a server-side copy by a HEAD of the source's URL, which
names this proxy: those HEADs (axios's User-Agent) are Azurite's, a part of the copy
that Azure does inside the service; they are logged as `service`, not counted.
"""

from __future__ import annotations

import http.client
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from blobmount.metrics import remote_op

# Not passed on: they describe one hop, not the request.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade"}
CHUNK = 1 << 20


class CountingProxy:
    """Listens on a free loopback port and forwards to 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._lock = threading.Lock()
        #: the client's requests by op since the last `take`
        self.counts: Counter[str] = Counter()
        #: (method, path, comp, status) of each request since the last `take`
        self.log: list[tuple[str, str, str, int]] = []
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.port}/{account}"

    def record(self, op: str, entry: tuple[str, str, str, int]) -> None:
        """Count a request as `op` (not when `service`: Azurite's own) and log it."""
        with self._lock:
            if op != "service":
                self.counts[op] += 1
            self.log.append(entry)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def take(self) -> tuple[Counter[str], list[tuple[str, str, str, int]]]:
        """The counts and log so far; both start again from nothing."""
        with self._lock:
            taken = (self.counts, self.log)
            self.counts, self.log = Counter(), []
        return taken

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (rclone, unmounted) is no error; the rest are."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as to Azurite directly
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base's name)
            pass  # the proxy's own log is `proxy.log`

        def forward(self) -> None:
            body = self._body()
            headers = {key: value for key, value in self.headers.items()
                       if key.lower() not in HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            answer = self._send(body, headers)
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            comp = query.get("comp", "")
            if comp == "list":
                comp = f"list prefix={query.get('prefix', '')}"
            op = remote_op(self.command, self.path, self.headers)
            if self.headers.get("User-Agent", "").startswith("axios/"):
                op, comp = "service", f"{comp} (Azurite's own, for a copy)"
            proxy.record(op, (self.command, parts.path, comp, answer.status))
            self.send_response_only(answer.status, answer.reason)
            length = answer.getheader("Content-Length")
            whole = None
            if length is None and self.command != "HEAD":
                whole = answer.read()  # chunked: passed on whole, with its length
                length = str(len(whole))
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if whole is not None:
                self.wfile.write(whole)
            elif self.command != "HEAD":
                while chunk := answer.read(CHUNK):
                    self.wfile.write(chunk)
            answer.close()

        def _body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            length = self.headers.get("Content-Length")
            return self.rfile.read(int(length)) if length is not None else None

        def _send(self, body: bytes | None, headers: dict[str, str]):
            # One upstream connection per client connection; a new one if Azurite
            # closed the old one while it was idle.
            for attempt in (1, 2):
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection("127.0.0.1",
                                                               proxy.target_port, timeout=300)
                try:
                    self.upstream.request(self.command, self.path, body=body,
                                          headers=headers)
                    return self.upstream.getresponse()
                except (http.client.RemoteDisconnected, BrokenPipeError,
                        ConnectionResetError):
                    self.upstream.close()
                    self.upstream = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = forward

    return Handler
