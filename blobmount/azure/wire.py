"""HTTP/1.1 by hand over a pool of kept-alive sockets: the lean requests' transport.

A 4 KiB GET from Azurite cost 0.44-0.47 ms of CPU by urllib3, 0.07 ms by hand over a
socket (1,000 in a row): http.client parses every answer's headers with the email
package. A cold read of small files is bound by the daemon's CPU, so the lean requests
(lean.py) are sent here. Only what Azure Storage answers is read: a body of
Content-Length bytes, a chunked one, or none (HEAD, 204, 304). Whatever else goes wrong
(no connection, a timeout, an answer this does not read) is a WireError: the caller
leaves the request to the SDK's pipeline, which does the retrying.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

#: What is read from a socket at once.
RECV_SIZE = 256 * 1024
#: A status line or header longer than this is not an answer from Azure.
LINE_MAX = 64 * 1024
HEADERS_MAX = 200


class WireError(Exception):
    """No usable answer: the connection failed or timed out, or the answer is not HTTP
    as this module reads it."""


class _Connection:
    """One socket and the bytes read from it but not consumed yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def dropped(self) -> bool:
        """Whether an idle kept-alive connection was closed by the server (or holds
        bytes nobody asked for): then it is not used again."""
        if self._buffer:
            return True
        poller = select.poll()  # not select(): the daemon's descriptors pass 1024
        poller.register(self.sock, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def _fill(self) -> None:
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            raise WireError("the connection closed before the answer ended")
        self._buffer += chunk

    def line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 2]
                return line
            if len(self._buffer) > LINE_MAX:
                raise WireError("a line of the answer is too long")
            self._fill()

    def some(self, most: int) -> bytes:
        """Up to `most` bytes (at least one)."""
        if not self._buffer:
            self._fill()
        piece = bytes(self._buffer[:most])
        del self._buffer[:most]
        return piece

    def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        piece = bytes(self._buffer[:count])
        del self._buffer[:count]
        return piece

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Answer:
    """An answer whose head is read; its body is read by `read` or `stream`, then the
    connection goes back to the pool (or is closed, if the body was not read to its
    end, or the server asked to close)."""

    def __init__(self, pool: Pool, connection: _Connection, status: int, reason: str,
                 headers: CaseInsensitiveDict[str], *, length: int | None, chunked: bool,
                 keep: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers: Mapping[str, str] = headers
        self._pool = pool
        self._connection: _Connection | None = connection
        self._left = length  # None: chunked
        self._chunked = chunked
        self._keep = keep

    def stream(self, block: int) -> Iterator[bytes]:
        """The body in pieces of up to `block` bytes; WireError if it is cut short."""
        connection = self._connection
        if connection is None:
            return
        try:
            if self._chunked:
                yield from self._chunks(connection, block)
            else:
                while self._left:
                    piece = connection.some(min(block, self._left))
                    self._left -= len(piece)
                    yield piece
        except OSError as exc:  # a timeout among them
            self._drop()
            raise WireError(f"the answer stopped: {exc}") from None
        except WireError:
            self._drop()
            raise
        self.release()

    def _chunks(self, connection: _Connection, block: int) -> Iterator[bytes]:
        while True:
            size_line = connection.line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise WireError("a chunk's size is not hexadecimal") from None
            if size == 0:
                while connection.line():  # trailers, up to the empty line
                    pass
                self._left = 0
                return
            while size:
                piece = connection.some(min(block, size))
                size -= len(piece)
                yield piece
            if connection.exactly(2) != b"\r\n":
                raise WireError("a chunk does not end with CRLF")

    def read(self) -> bytes:
        return b"".join(self.stream(RECV_SIZE))

    def release(self) -> None:
        """Done with the answer: its connection is kept if the body was read to its end."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._keep and self._left == 0:
            self._pool.put_back(connection)
        else:
            connection.close()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class Pool:
    """Kept-alive connections to one endpoint (http or https), used one request at a
    time each, by any thread."""

    def __init__(self, url: str, *, connect_timeout: float, read_timeout: float,
                 ca_certs: str | None = None, maxsize: int = 64) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        default = 443 if self._https else 80
        self._host_header = (self._host if self._port == default
                             else f"{self._host}:{self._port}")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._maxsize = maxsize
        self._context = ssl.create_default_context(cafile=ca_certs) if self._https else None
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> _Connection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.dropped():
                    return connection
                connection.close()
        sock = socket.create_connection((self._host, self._port),
                                        timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def put_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self._maxsize:
                self._idle.append(connection)
                return
        connection.close()

    def request(self, method: str, target: str, headers: Mapping[str, str],
                body: bytes | None = None) -> Answer:
        """Send one request and read the head of its answer; WireError if none came."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if "content-length" not in {name.lower() for name in headers} and (
                body is not None or method in ("PUT", "POST", "PATCH")):
            # As http.client does: a PUT with no body says so (Azure wants the length).
            lines.append(f"Content-Length: {len(body or b'')}")
        try:
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise WireError("a header that HTTP cannot carry") from None
        try:
            connection = self._connection()
        except OSError as exc:
            raise WireError(f"no connection: {exc}") from None
        try:
            connection.sock.sendall(head + body if body else head)
            return self._answer(connection, method)
        except (OSError, WireError, ValueError, UnicodeError) as exc:
            connection.close()
            raise WireError(str(exc) or type(exc).__name__) from None

    def _answer(self, connection: _Connection, method: str) -> Answer:
        status_line = connection.line().decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise WireError(f"not an HTTP answer: {status_line[:80]!r}")
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for _ in range(HEADERS_MAX):
            line = connection.line()
            if not line:
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise WireError("a header without a colon")
            name, value = name.strip(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        else:
            raise WireError("too many headers")
        status = int(code)
        keep = (version == "HTTP/1.1"
                and headers.get("Connection", "").lower() != "close")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length: int | None = 0
        if status < 200:
            raise WireError(f"an interim answer ({status}), to no request that asks one")
        if method == "HEAD" or status in (204, 304):
            chunked = False
        elif chunked:
            length = None
        elif "Content-Length" in headers:
            length = int(headers["Content-Length"])
            if length < 0:
                raise WireError("a negative Content-Length")
        else:
            raise WireError("an answer with a body of no stated length")
        return Answer(self, connection, status, reason, headers, length=length,
                      chunked=chunked, keep=keep)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
