"""Finding the processes one test started, and checking what a failed command printed.

A daemon started by `blobmount mount` runs in its own session, so the test does not
own it as a child. Every test keeps its paths under its own `tmp_path`, and every
daemon (and the embedded Azurite) has such a path on its command line: scanning
/proc/*/cmdline for it finds exactly this test's processes, and never another's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from .conftest import FUSERMOUNT, pid_alive


def processes(marker: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every live process with `marker` in one of its arguments."""
    marker = str(marker)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0")]
        except OSError:
            continue
        if any(marker in arg for arg in argv) and pid_alive(int(entry)):
            found.append((int(entry), argv))
    return found


def _is_blobmount(argv: list[str]) -> bool:
    return any(arg == "-m" and following == "blobmount"
               for arg, following in zip(argv, argv[1:], strict=False))


def daemons(marker: str | os.PathLike) -> list[int]:
    """PIDs of the blobmount processes (daemons, or CLIs still running) of this test."""
    return [pid for pid, argv in processes(marker) if _is_blobmount(argv)]


def azurites(marker: str | os.PathLike) -> list[int]:
    """PIDs of the Azurite processes whose command line names a path of this test."""
    return [pid for pid, argv in processes(marker)
            if not _is_blobmount(argv) and any("azurite" in arg for arg in argv)]


def accepts(endpoint_port: int) -> bool:
    """Whether something listens on this loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", endpoint_port), timeout=0.5):
            return True
    except OSError:
        return False


def mount_points() -> list[str]:
    """Every mount point, decoded (/proc/self/mounts writes a space as \\040)."""
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as mounts:
        return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split(" ")[1])
                for line in mounts]


def kill_everything(marker: str | os.PathLike, *mountpoints: Path) -> None:
    """After a failed test: detach its mounts and kill its daemons and Azurites by PID."""
    for mountpoint in mountpoints:
        if str(mountpoint) in mount_points():
            subprocess.run([FUSERMOUNT, "-u", "-z", str(mountpoint)], check=False)
    for pid in daemons(marker) + azurites(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `blobmount: ...` line a failed command must print, and nothing else."""
    assert result.returncode != 0, f"expected a failure, got exit 0: {result.stdout!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr: {lines!r}"
    assert lines[0].startswith("blobmount: "), lines[0]
    return lines[0]
