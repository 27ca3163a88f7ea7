"""HTTP/1.1 by hand (azure/wire.py): against a loopback server that answers scripted
bytes, so that each way an answer can be framed, kept alive, cut or garbled is seen."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from blobmount.azure.wire import Pool, WireError

#: What the server does with one request: the bytes to answer, and whether to close
#: the connection after them.
Script = Callable[[bytes], tuple[bytes, bool]]


class Server:
    """Answers each request's head (and its Content-Length body) by `script`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released as each connection is closed
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._answer_all(sock)
        finally:
            sock.close()
            self.closed.release()

    def _answer_all(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(buffer) < length:
                buffer += sock.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
            self.requests.append(head + b"\r\n\r\n" + body)
            answer, close = self.script(head)
            sock.sendall(answer)
            if close:
                return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Server]]:
    servers: list[Server] = []

    def start(script: Script) -> Server:
        servers.append(Server(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def pool_for(server: Server, timeout: float = 5.0) -> Pool:
    return Pool(server.url, connect_timeout=timeout, read_timeout=timeout)


def ok(body: bytes, *extra: str) -> bytes:
    head = "\r\n".join(["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra])
    return head.encode() + b"\r\n\r\n" + body


def test_a_body_of_stated_length_and_the_connection_kept_for_the_next(serve) -> None:
    server = serve(lambda head: (ok(b"hello", "ETag: \"0x1\""), False))
    pool = pool_for(server)
    for _ in range(3):
        answer = pool.request("GET", "/c/blob?x=1", {"x-ms-version": "2025-01-05"})
        assert (answer.status, answer.reason, answer.read()) == (200, "OK", b"hello")
        assert answer.headers["etag"] == '"0x1"'  # any case
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /c/blob?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_chunked_body_is_put_together(serve) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n")
    server = serve(lambda head: (chunked, False))
    pool = pool_for(server)
    assert pool.request("GET", "/c?comp=list", {}).read() == b"hello, world"
    assert pool.request("GET", "/c?comp=list", {}).read() == b"hello, world"
    assert server.connections == 1


def test_a_head_answer_has_no_body_whatever_its_length_says(serve) -> None:
    server = serve(lambda head: (b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n", False))
    pool = pool_for(server)
    answer = pool.request("HEAD", "/c/blob", {})
    assert (answer.read(), answer.headers["Content-Length"]) == (b"", "4096")
    assert pool.request("HEAD", "/c/blob", {}).status == 200
    assert server.connections == 1


def test_a_put_without_a_body_says_its_length_is_0(serve) -> None:
    server = serve(lambda head: (b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", False))
    assert pool_for(server).request("PUT", "/c/empty", {}).status == 201
    assert b"\r\nContent-Length: 0\r\n" in server.requests[0]


def test_connection_close_is_obeyed(serve) -> None:
    server = serve(lambda head: (ok(b"x", "Connection: close"), True))
    pool = pool_for(server)
    assert [pool.request("GET", "/b", {}).read() for _ in range(2)] == [b"x", b"x"]
    assert server.connections == 2


def test_a_kept_connection_the_server_closed_meanwhile_is_not_used(serve) -> None:
    # The server closes after answering, without saying so (an idle timeout).
    server = serve(lambda head: (ok(b"x"), True))
    pool = pool_for(server)
    assert pool.request("GET", "/b", {}).read() == b"x"
    assert server.closed.acquire(timeout=5)
    # The closed socket reads as ready (its EOF): a new connection is made.
    assert pool.request("GET", "/b", {}).read() == b"x"
    assert server.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
], ids=["length", "chunked"])
def test_a_body_cut_short_is_an_error_and_its_connection_dropped(serve, answer) -> None:
    server = serve(lambda head: (answer, True))
    pool = pool_for(server)
    with pytest.raises(WireError, match="closed before the answer ended"):
        pool.request("GET", "/b", {}).read()
    assert not pool._idle


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 2OO OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nno length stated",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"",
], ids=["not-http", "bad-status", "bad-header", "no-length", "interim", "nothing"])
def test_an_answer_not_read_here_is_an_error(serve, answer) -> None:
    server = serve(lambda head: (answer, True))
    with pytest.raises(WireError):
        pool_for(server).request("GET", "/b", {})


def test_no_answer_in_time_is_an_error(serve) -> None:
    server = serve(lambda head: (b"", False))  # reads the request, answers nothing
    with pytest.raises(WireError, match="timed out"):
        pool_for(server, timeout=0.2).request("GET", "/b", {})


def test_no_server_is_an_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(WireError, match="no connection"):
        Pool(f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=1).request(
            "GET", "/b", {})


def test_a_body_streams_in_blocks_and_an_unread_rest_drops_the_connection(serve) -> None:
    server = serve(lambda head: (ok(b"a" * 1000), False))
    pool = pool_for(server)
    answer = pool.request("GET", "/b", {})
    assert [len(piece) for piece in answer.stream(400)] == [400, 400, 200]
    assert len(pool._idle) == 1
    answer = pool.request("GET", "/b", {})
    next(answer.stream(400))
    answer.release()  # 600 bytes never read: the connection cannot serve another
    assert not pool._idle


def test_a_header_http_cannot_carry_is_an_error_before_anything_is_sent(serve) -> None:
    server = serve(lambda head: (ok(b"x"), False))
    with pytest.raises(WireError, match="cannot carry"):
        pool_for(server).request("PUT", "/b", {"x-ms-meta-name": "\u263a"}, b"x")
    assert server.connections == 0


def test_a_connection_on_a_descriptor_past_1024_is_kept_too(serve) -> None:
    """The daemon holds a descriptor per open file: select() cannot watch past 1024."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"at most {hard} open files here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        server = serve(lambda head: (ok(b"x"), False))
        pool = pool_for(server)
        assert [pool.request("GET", "/b", {}).read() for _ in range(2)] == [b"x", b"x"]
        assert pool._idle[0].sock.fileno() > 1024
        assert server.connections == 1
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
