"""Child processes that die with the daemon, even when it is killed with SIGKILL.

A parent-death signal (prctl PR_SET_PDEATHSIG) follows the *thread* that started the
child, and trio's `open_process` starts children from a worker thread, which ends
when it has been idle for a while: the signal would kill a healthy job then. So a
`Child` is started from the calling thread (the daemon's main thread, which lives as
long as the daemon) through util-linux's `setpriv --pdeathsig KILL`, which sets the
signal and execs the program: no Python runs between fork and exec. Without
`setpriv` the child simply is not tied.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import trio


def _tie() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_TIE = _tie()


class Child:
    """A running child with its stdout and stderr as trio streams (stdin: /dev/null).

    Starting it forks and execs from the calling thread, blocking for the few
    milliseconds that takes.
    """

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 tied: bool = True) -> None:
        if shutil.which(command[0]) is None:  # else setpriv would start, and say so
            raise FileNotFoundError(errno.ENOENT, "no such program", command[0])
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self._popen = subprocess.Popen(
                [*(_TIE if tied else []), *command], stdin=subprocess.DEVNULL,
                stdout=out_write, stderr=err_write, env=env)
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        self.pid = self._popen.pid
        self._pidfd = os.pidfd_open(self.pid)
        self.stdout = trio.lowlevel.FdStream(out_read)
        self.stderr = trio.lowlevel.FdStream(err_read)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """Its exit status, once it has exited (negative: the signal that ended it)."""
        while self._popen.poll() is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self._popen.returncode

    def terminate(self) -> None:
        if self._popen.poll() is None:
            self._popen.terminate()

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    async def aclose(self) -> None:
        """Close its streams and its pidfd (the process itself is left alone)."""
        await self.stdout.aclose()
        await self.stderr.aclose()
        with contextlib.suppress(OSError):
            os.close(self._pidfd)
