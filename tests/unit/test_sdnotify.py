"""sd_notify: datagrams to $NOTIFY_SOCKET, by path or in the abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from blobmount.sdnotify import Notifier, socket_address


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_addresses():
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == "\0abstract/name"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


def test_path_socket_gets_ready_and_status(tmp_path):
    path = str(tmp_path / "notify")
    with receiver(path) as sock:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.notify(READY=1, STATUS="mounted 2 entries\non /mnt/x")
        assert sock.recv(4096) == b"READY=1\nSTATUS=mounted 2 entries on /mnt/x"


def test_abstract_socket():
    name = f"blobmount-test-{uuid.uuid4().hex}"
    with receiver("\0" + name) as sock:
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).notify(STOPPING=1)
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_systemd_nothing_happens():
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.notify(READY=1) is False


def test_a_gone_socket_is_logged_not_raised(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "absent"))
    assert notifier.notify(READY=1) is False
    assert "cannot notify systemd" in caplog.text


def test_from_the_real_environment_takes_the_variable_away(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
    notifier = Notifier.from_environment()
    assert notifier.address == str(tmp_path / "n")
    assert "NOTIFY_SOCKET" not in os.environ  # children (AzCopy) do not inherit it


@pytest.mark.parametrize("value", ["@", "/"])
def test_degenerate_addresses_do_not_raise(value):
    Notifier.from_environment({"NOTIFY_SOCKET": value}).notify(READY=1)
