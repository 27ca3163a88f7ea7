"""systemd's readiness protocol (sd_notify), without a dependency.

A service started with `Type=notify` finds `$NOTIFY_SOCKET` in its environment: the
path of a unix datagram socket, or, starting with '@', a name in the abstract
namespace. Each message is one datagram of newline-separated `KEY=VALUE` lines, such
as `READY=1` (the mount is live) or `STOPPING=1` (unmounting). Outside systemd the
variable is unset and every call is a no-op.

Layer 0: the standard library only.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str | None) -> str | None:
    """The address to send to for a $NOTIFY_SOCKET value; None when it names none we speak.

    '@name' is the abstract-namespace socket '\\0name'; an absolute path is a path.
    Other forms (systemd's `vsock:` addresses) are not for a local daemon.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends sd_notify messages to the socket named when it was made.

    `from_environment()` takes $NOTIFY_SOCKET out of the environment, so that the
    programs the daemon starts (AzCopy, Azurite) do not talk to systemd in its name.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        if environ is None:
            value = os.environ.pop("NOTIFY_SOCKET", None)
        else:
            value = environ.get("NOTIFY_SOCKET")
        return cls(socket_address(value))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send one message of `KEY=VALUE` lines (`notify(READY=1, STATUS="...")`).

        True when it was sent. A failure is logged, never raised: systemd going away
        must not take the mount with it.
        """
        if self.address is None:
            return False
        # A newline inside a value would start a new field: keep each value one line.
        message = "\n".join(f"{key}={' '.join(str(value).splitlines())}"
                            for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", self.address.replace("\0", "@"), exc)
            return False
        return True
