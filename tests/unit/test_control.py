"""The control socket: one JSON line each way, progress lines before the reply, a
request cancelled when its client leaves, and only the daemon's user answered."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount import control
from blobmount.control import ControlServer
from blobmount.errors import BlobmountError

#: a wait that only a broken test reaches (the condition never comes)
HANG = 60.0


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(control, "state_dir", lambda: tmp_path / "state")
    return tmp_path / "state"


def serve_while(handlers, client, **options):
    """Serve `handlers` on the socket of /mnt/x while `client()` runs in a thread."""
    outcome = {}

    async def main() -> None:
        server = ControlServer(control.socket_path("/mnt/x"), handlers, **options)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            outcome["value"] = await trio.to_thread.run_sync(client)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return outcome["value"]


def test_progress_lines_come_before_the_reply() -> None:
    async def counting(request):
        for done in range(3):
            await request["progress"]({"done": done})
        return {"total": 3}

    seen = []
    reply = serve_while({"count": counting}, lambda: control.request(
        "/mnt/x", "count", on_progress=seen.append))
    assert reply == {"total": 3}
    assert seen == [{"done": 0}, {"done": 1}, {"done": 2}]
    # Without a listener, no progress is sent at all.
    assert serve_while({"count": counting}, lambda: control.request("/mnt/x", "count")) == {
        "total": 3}


def test_errors_are_one_line() -> None:
    async def failing(_request):
        raise BlobmountError("no such thing")

    def client():
        with pytest.raises(BlobmountError, match="no such thing"):
            control.request("/mnt/x", "fail")
        with pytest.raises(BlobmountError, match="malformed request"):
            control.request("/mnt/x", "unknown-op")
        return True

    assert serve_while({"fail": failing}, client)


def test_a_request_is_cancelled_when_its_client_leaves() -> None:
    started, ended = threading.Event(), threading.Event()

    async def slow(_request):
        started.set()
        try:
            await trio.sleep_forever()  # only a cancel ends it
        finally:
            ended.set()
        return {}

    def client():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(control.socket_path("/mnt/x")))
            sock.sendall(json.dumps({"op": "slow"}).encode() + b"\n")
            assert started.wait(HANG)
        return ended.wait(HANG)  # the condition, not a time: HANG only if it never comes

    assert serve_while({"slow": slow}, client, cancel_on_close={"slow"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_other_users_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = Path(tempfile.mkdtemp(prefix="blobmount-control-", dir="/tmp"))
    monkeypatch.setattr(control, "state_dir", lambda: shared)

    async def status(_request):
        return {"secret": "yes"}

    def client():
        path = control.socket_path("/mnt/x")
        # Let anyone reach the socket: the peer check alone must refuse them.
        for opened in (shared, path.parent, path):
            os.chmod(opened, 0o777)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(str(path))
                    with contextlib.suppress(BrokenPipeError):  # refused before reading
                        sock.sendall(b'{"op": "status"}\n')
                    os.write(write, sock.recv(4096))
            except BaseException as exc:
                os.write(write, json.dumps({"child": repr(exc)}).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read, "rb") as answer:
            return json.loads(answer.read())

    try:
        reply = serve_while({"status": status}, client)
        assert reply == {"ok": False, "error": "permission denied: not the mounting user"}
        # The owner is answered.
        assert serve_while({"status": status},
                           lambda: control.request("/mnt/x", "status")) == {"secret": "yes"}
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_held_request_lasts_until_its_client_leaves() -> None:
    """held_request yields once the daemon says the request is in effect, and returns
    only once the daemon has undone it."""
    events = []

    async def hold(request):
        events.append("held")
        try:
            await request["progress"]({"holding": True})
            await trio.sleep_forever()
        finally:
            events.append("released")
        return {}

    def client():
        with control.held_request("/mnt/x", "hold") as first:
            seen_inside = list(events)
        return first, seen_inside, list(events)

    first, inside, after = serve_while({"hold": hold}, client, cancel_on_close=("hold",))
    assert first == {"holding": True}
    assert inside == ["held"]
    assert after == ["held", "released"]


def test_a_held_request_refused_is_one_error() -> None:
    async def refuse(_request):
        raise BlobmountError("not now")

    def client():
        with pytest.raises(BlobmountError, match="not now"), \
                control.held_request("/mnt/x", "hold"):
            pass
        return True

    assert serve_while({"hold": refuse}, client, cancel_on_close=("hold",))


def test_a_peer_that_never_finishes_its_request_is_answered_and_let_go() -> None:
    # Time is the subject: the clock jumps whenever every task waits, so the server's
    # limit passes in virtual seconds, whatever the machine's load.
    async def status(_request):
        return {"pid": 1}

    async def main() -> tuple[bytes, dict]:
        server = ControlServer(control.socket_path("/mnt/x"), {"status": status})
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            slow = await trio.open_unix_socket(str(control.socket_path("/mnt/x")))
            await slow.send_all(b'{"op": "sta')
            answer = b""
            with trio.fail_after(control.REQUEST_TIMEOUT * 2):  # fails, never hangs
                while chunk := await slow.receive_some(65536):
                    answer += chunk
            # Served alongside, and after: the daemon went on.
            fine = await trio.open_unix_socket(str(control.socket_path("/mnt/x")))
            await fine.send_all(b'{"op": "status"}\n')
            reply = json.loads(await fine.receive_some(65536))
            nursery.cancel_scope.cancel()
        return answer, reply

    answer, reply = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert json.loads(answer) == {"ok": False, "error": "request incomplete"}
    assert reply == {"ok": True, "pid": 1}


def test_a_socket_path_too_long_for_an_address_still_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A deep HOME: the socket's path is longer than a unix address holds (107 bytes).
    deep = tmp_path / ("h" * 60) / ("o" * 60) / ".blobmount"
    monkeypatch.setattr(control, "state_dir", lambda: deep)
    assert len(str(control.socket_path("/mnt/x"))) > 107

    async def status(request):
        return {"at_its_path": control.socket_path("/mnt/x").is_socket()}

    reply = serve_while({"status": status}, lambda: control.request("/mnt/x", "status"))
    assert reply == {"at_its_path": True}
