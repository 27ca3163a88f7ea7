"""The control socket: how `blobmount status` (and later prefetch, sync) reach a daemon.

One unix socket per mount point, in a folder only the mounting user can enter. A
request is one JSON object on one line ({"op": "status", ...}); the reply is one
JSON object on one line, {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from .errors import BlobmountError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 1 << 20


def state_dir() -> Path:
    """~/.blobmount: the per-user folder for logs and sockets."""
    return Path.home() / ".blobmount"


def socket_path(mountpoint: str | os.PathLike) -> Path:
    """The control socket of the daemon serving `mountpoint`."""
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return state_dir() / "run" / f"{key}.sock"


class DaemonNotRunning(BlobmountError):
    """No blobmount daemon answers for this mount point."""


def request(mountpoint: str | os.PathLike, op: str, timeout: float | None = 30.0,
            **args: Any) -> dict[str, Any]:
    """Send one request to the daemon serving `mountpoint` and return its reply."""
    path = socket_path(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"{mountpoint}: no blobmount daemon is serving this mount point"
            ) from None
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    if not reply:
        raise DaemonNotRunning(f"{mountpoint}: the daemon closed the connection")
    answer = json.loads(reply)
    if not answer.pop("ok", False):
        raise BlobmountError(answer.get("error", "the daemon refused the request"))
    return answer


class ControlServer:
    """Serves requests on the control socket until cancelled."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(16)
        try:
            listener = trio.SocketListener(sock)
            task_status.started()
            await trio.serve_listeners(self._serve_one, [listener])
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
                reply = await self._answer(data)
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _answer(self, data: bytes) -> dict[str, Any]:
        try:
            message = json.loads(data)
            handler = self.handlers[message.pop("op")]
        except (ValueError, KeyError, TypeError, AttributeError):
            return {"ok": False, "error": "malformed request"}
        try:
            return {"ok": True, **await handler(message)}
        except BlobmountError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control request failed")
            return {"ok": False, "error": "internal error, see the daemon's log"}
