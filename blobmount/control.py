"""The control socket: how `blobmount status`, `sync`, `prefetch` ... reach a daemon.

One unix socket per mount point, in a folder only the mounting user can enter; the
daemon also checks each connection's peer (SO_PEERCRED) and answers only its own user.
A request is one JSON object on one line ({"op": "status", ...}); the reply is one
JSON object on one line, {"ok": true, ...} or {"ok": false, "error": "..."}.

A request with `"progress": true` may get lines `{"progress": {...}}` before its
reply. For the ops named in `cancel_on_close`, closing the connection before the reply
cancels the request (Ctrl-C on `blobmount prefetch` stops its AzCopy job).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import trio

from .errors import BlobmountError, DaemonNotRunning
from .supervise import fault

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: What a handler finds under "progress" in its request: send one progress line.
Progress = Callable[[dict[str, Any]], Awaitable[None]]
MAX_REQUEST = 1 << 20
#: Seconds a peer has to send its whole request line.
REQUEST_TIMEOUT = 30
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: The longest path a unix socket address holds (sun_path, less its final NUL).
_SUN_PATH_MAX = 107


def state_dir() -> Path:
    """~/.blobmount: the per-user folder for logs and sockets."""
    return Path.home() / ".blobmount"


def socket_path(mountpoint: str | os.PathLike) -> Path:
    """The control socket of the daemon serving `mountpoint`."""
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return state_dir() / "run" / f"{key}.sock"


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """`path` as a unix socket address, for the `with` block: a path too long for one
    (a deep HOME) is reached through its folder's descriptor, /proc/self/fd/N/NAME."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def request(mountpoint: str | os.PathLike, op: str, timeout: float | None = 30.0, *,
            on_progress: Callable[[dict[str, Any]], None] | None = None,
            **args: Any) -> dict[str, Any]:
    """Send one request to the daemon serving `mountpoint` and return its reply.

    With `on_progress`, the daemon may send progress first: each goes to it.
    `timeout` bounds each wait for a line, not the whole request.
    """
    if on_progress is not None:
        args["progress"] = True
    with _send(mountpoint, op, timeout, args) as sock:
        for answer in _answers(sock):
            if "progress" in answer and "ok" not in answer:
                if on_progress is not None:
                    on_progress(answer["progress"])
                continue
            return _checked(answer)
    raise DaemonNotRunning(f"{mountpoint}: the daemon closed the connection")


@contextlib.contextmanager
def held_request(mountpoint: str | os.PathLike, op: str, timeout: float | None = 30.0,
                 **args: Any) -> Iterator[dict[str, Any]]:
    """A request that lasts while its connection is open (an op in the daemon's
    `cancel_on_close` that sends one progress line once it is in effect).

    Yields that progress line. Leaving ends the request and waits until the daemon has
    closed the connection, so what the request did is undone by then.
    """
    with _send(mountpoint, op, timeout, {**args, "progress": True}) as sock:
        for answer in _answers(sock):
            if "progress" not in answer or "ok" in answer:
                _checked(answer)
                raise BlobmountError(f"{mountpoint}: the daemon ended {op} at once")
            break
        else:
            raise DaemonNotRunning(f"{mountpoint}: the daemon closed the connection")
        try:
            yield answer["progress"]
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass


@contextlib.contextmanager
def _send(mountpoint: str | os.PathLike, op: str, timeout: float | None,
          args: dict[str, Any]) -> Iterator[socket.socket]:
    """A connection to the daemon serving `mountpoint`, with the request sent on it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _address(socket_path(mountpoint)) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"{mountpoint}: no blobmount daemon is serving this mount point"
            ) from None
        except PermissionError:
            raise BlobmountError(
                f"{mountpoint}: the daemon serving it belongs to another user") from None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # A daemon that refuses us answers and hangs up before reading: read why.
            sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        yield sock


def _answers(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """The JSON lines the daemon sends, until it closes the connection."""
    buffer = b""
    while True:
        line, newline, buffer = buffer.partition(b"\n")
        if not newline:
            data = sock.recv(65536)
            if not data:
                return
            buffer = line + data
            continue
        yield json.loads(line)


def _checked(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.pop("ok", False):
        raise BlobmountError(answer.get("error", "the daemon refused the request"))
    return answer


class ControlServer:
    """Serves requests on the control socket until cancelled."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler], *,
                 cancel_on_close: Collection[str] = ()) -> None:
        self.path = path
        self.handlers = handlers
        self.cancel_on_close = frozenset(cancel_on_close)
        self._uid = os.geteuid()

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with _address(self.path) as address:
            await sock.bind(address)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        try:
            listener = trio.SocketListener(sock)
            task_status.started()
            await trio.serve_listeners(self._serve_one, [listener])
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _peer_allowed(self, stream: trio.SocketStream) -> bool:
        """Only the daemon's own user may ask it anything."""
        try:
            raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                           _PEERCRED.size)
        except OSError:
            return False
        pid, uid, _gid = _PEERCRED.unpack(raw)
        if uid != self._uid:
            log.warning("control socket: refused a request from uid %d (pid %d)", uid, pid)
            return False
        return True

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        # Whatever a peer sends, or however it fails, only this connection ends.
        async with stream:
            try:
                if not self._peer_allowed(stream):
                    await _reply(stream, {"ok": False,
                                         "error": "permission denied: not the mounting user"})
                    return
                data = await self._receive_request(stream)
                if data is None:
                    return
                reply = await self._answer(data, stream)
                if reply is not None:
                    await _reply(stream, reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("control socket: a connection failed; the daemon goes on")

    async def _receive_request(self, stream: trio.SocketStream) -> bytes | None:
        """The request line, or None (after an error reply where one can be given) when
        the peer sent too much, or too little before it left or for too long."""
        data = b""
        with trio.move_on_after(REQUEST_TIMEOUT) as waited:
            while b"\n" not in data and len(data) <= MAX_REQUEST:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        line, newline, _ = data.partition(b"\n")
        if len(line) > MAX_REQUEST:
            log.warning("control socket: refused a request of more than %d bytes", MAX_REQUEST)
            await _reply(stream, {"ok": False, "error": "request too large"})
            return None
        if waited.cancelled_caught and not newline:
            log.warning("control socket: no whole request within %d s; hung up", REQUEST_TIMEOUT)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await _reply(stream, {"ok": False, "error": "request incomplete"})
            return None
        return line

    async def _answer(self, data: bytes, stream: trio.SocketStream) -> dict[str, Any] | None:
        """The reply to one request; None when the peer left and the request was cancelled."""
        message = _parse(data)
        op = message.pop("op", None) if message is not None else None
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if message is None or handler is None or not isinstance(op, str):
            return {"ok": False, "error": "malformed request"}
        send_lock = trio.Lock()

        async def progress(update: dict[str, Any]) -> None:
            async with send_lock:
                await _reply(stream, {"progress": update})

        async def no_progress(_update: dict[str, Any]) -> None:
            pass

        message["progress"] = progress if message.get("progress") is True else no_progress
        if op not in self.cancel_on_close:
            return await self._run(op, handler, message)
        reply: dict[str, Any] | None = None
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                # A request is one line: anything more, or the end, means the peer left.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.receive_some(1)
                log.info("control socket: the client left; %s cancelled", op)
                nursery.cancel_scope.cancel()

            async def answer() -> None:
                nonlocal reply
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    reply = await self._run(op, handler, message)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(answer)
        return reply

    async def _run(self, op: str, handler: Handler,
                   message: dict[str, Any]) -> dict[str, Any]:
        try:
            fault(f"control_{op}")
            return {"ok": True, **await handler(message)}
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the client left while we sent progress
        except BlobmountError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control request %s failed; the daemon goes on", op)
            return {"ok": False, "error": "internal error, see the daemon's log"}


def _parse(data: bytes) -> dict[str, Any] | None:
    """A request line as a JSON object, or None for anything else (not JSON, nested too
    deep for the parser, not an object)."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


async def _reply(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(reply).encode() + b"\n")
