"""Every blobmount mount on this machine, and what each daemon says about itself.

The kernel's mount table (/proc/self/mounts) is the truth about what is mounted: a
blobmount mount has the type `fuse.blobmount`. Each mount's daemon is then asked on
its control socket; a mount whose daemon is gone answers statfs() with ENOTCONN and
shows as dead. A mount made by another user is listed, but its daemon answers only
to that user.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from . import control
from .errors import BlobmountError

FSTYPE = "fuse.blobmount"
MOUNTS = "/proc/self/mounts"

#: States a mount can be in.
LIVE = "live"                # its daemon answered
DEAD = "dead"                # mounted, but no daemon serves it (ENOTCONN)
UNREACHABLE = "unreachable"  # mounted and served, but its control socket does not answer
OTHER_USER = "other-user"    # mounted by another user, whose daemon answers only to them


@dataclass
class MountRecord:
    """One `fuse.blobmount` line of the mount table, and what was learnt about it."""

    mountpoint: str
    options: dict[str, str]
    state: str = ""
    detail: str = ""
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> int | None:
        value = self.options.get("user_id")
        return int(value) if value and value.isdigit() else None

    def as_json(self) -> dict[str, Any]:
        return {"mountpoint": self.mountpoint, "state": self.state, "uid": self.uid,
                "detail": self.detail, "status": self.status or None}


def unescape(field_text: str) -> str:
    """A mount table field: space, tab, newline and backslash come as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field_text)


def blobmount_mounts(table: str = MOUNTS) -> list[MountRecord]:
    """The `fuse.blobmount` entries of the mount table, in mount order."""
    found = []
    with open(table, encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            fields = line.split(" ")
            if len(fields) < 4 or fields[2] != FSTYPE:
                continue
            options = dict(option.partition("=")[::2] for option in fields[3].split(","))
            found.append(MountRecord(unescape(fields[1]), options))
    return found


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def inspect(record: MountRecord, timeout: float = 5.0) -> MountRecord:
    """Ask the mount's daemon for its status, and say what state the mount is in."""
    uid = record.uid
    if uid is not None and uid != os.getuid():
        record.state = OTHER_USER
        record.detail = (f"mounted by {_user_name(uid)} (uid {uid}); its daemon answers"
                         " only to that user")
        return record
    try:
        record.status = control.request(record.mountpoint, "status", timeout=timeout)
        record.state = LIVE
        return record
    except control.DaemonNotRunning as exc:
        problem = str(exc)
        # No socket: the daemon is gone, unless the kernel can still reach it.
        if _connection_state(record.mountpoint, timeout) == errno.ENOTCONN:
            record.state = DEAD
            record.detail = ("its daemon is gone; detach it with"
                             f" `fusermount3 -u {record.mountpoint}`")
            return record
    except (BlobmountError, OSError, ValueError) as exc:
        problem = str(exc) or type(exc).__name__
    record.state = UNREACHABLE
    record.detail = f"its daemon does not answer on its control socket ({problem})"
    return record


def _connection_state(mountpoint: str, timeout: float) -> int | None:
    """The errno of statfs() on the mount (0: it answered; None: no answer in time).

    A hung daemon would block statfs() forever, so it runs in a thread that is
    abandoned if it does not return.
    """
    outcome: list[int] = []

    def probe() -> None:
        try:
            os.statvfs(mountpoint)
            outcome.append(0)
        except OSError as exc:
            outcome.append(exc.errno or errno.EIO)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else None


def every_mount(timeout: float = 5.0) -> list[MountRecord]:
    """Every blobmount mount on the machine, each inspected."""
    return [inspect(record, timeout) for record in blobmount_mounts()]


def describe(record: MountRecord) -> str:
    """One line for a person: where, in what state, serving what."""
    if record.state != LIVE:
        return f"{record.mountpoint}: {record.state}: {record.detail}"
    status = record.status
    entries = status.get("mounts", [])
    uploads = status.get("uploads", {})
    pending = uploads.get("count", 0)
    failing = len(uploads.get("failed", []))
    failing_note = f" ({failing} failing)" if failing else ""
    return (f"{record.mountpoint}: live: daemon pid {status.get('pid')},"
            f" config {status.get('config')}, {len(entries)}"
            f" {'entry' if len(entries) == 1 else 'entries'}"
            f" ({', '.join(entry['local'] + '/' for entry in entries)}),"
            f" {pending} pending uploads{failing_note}")
