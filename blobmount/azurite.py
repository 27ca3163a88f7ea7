"""A private Azurite (the Azure Storage emulator's blob service) for tests and benchmarks.

    with Azurite() as azurite:          # in memory, on a free loopback port
        client = BlobServiceClient.from_connection_string(azurite.connection_string)

Azurite runs in its own session and is stopped by its PID (its process group, which is its
own), never by name; started from the main thread, it also gets SIGTERM if this process dies
without stopping it. Its output goes to a log file, never to a pipe that could fill.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from blobmount.config.credentials import AZURITE_ACCOUNT, AZURITE_KEY
from blobmount.errors import BlobmountError
from blobmount.tools import find_azurite

#: Azurite's single account and its published, well-known key (not a secret).
ACCOUNT_NAME = AZURITE_ACCOUNT
ACCOUNT_KEY = AZURITE_KEY

_POLL_INTERVAL = 0.05
_LOG_TAIL_BYTES = 2000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the thread that started us ends.

    So a test run that is killed (and never runs its teardown) leaves no Azurite behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_POLL_INTERVAL * 4):
            return True
    except OSError:
        return False


class Azurite:
    """A private Azurite blob service on a loopback port, stopped by PID."""

    def __init__(
        self,
        location: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: Path | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """`location` None keeps the blobs in memory; `port` 0 picks a free port at the
        first start. `tls` (a PEM certificate and its key) serves HTTPS and takes OAuth
        bearer tokens too (Azurite's `--oauth basic`: their claims are checked, not
        their signature)."""
        self.location = Path(location) if location is not None else None
        self.host = host
        self.port = port
        self.binary = binary
        self.tls = tls
        self.pid: int | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self._scheme}://{self.host}:{self.port}/{ACCOUNT_NAME}"

    @property
    def _scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self._scheme};AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.endpoint};"
        )

    def _command(self, binary: Path) -> list[str]:
        command = [
            str(binary),
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.port),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]
        if self.tls:
            command += ["--cert", str(self.tls[0]), "--key", str(self.tls[1]),
                        "--oauth", "basic"]
        # Azurite refuses --location together with --inMemoryPersistence.
        if self.location is None:
            command.append("--inMemoryPersistence")
        else:
            command += ["--location", str(self.location)]
        return command

    def start(self, timeout: float = 30.0) -> None:
        """Start Azurite and return once its port accepts connections."""
        if self._process is not None:
            return
        binary = self.binary or find_azurite()
        if self.port == 0:
            # Chosen once: a restart (stop, then start) listens on the same port, so
            # clients keep their endpoint, and with a `location` find their blobs again.
            self.port = free_port(self.host)
        elif _accepts(self.host, self.port):
            # Something else listens there, and would pass for Azurite below.
            raise BlobmountError(f"cannot start Azurite: {self.host}:{self.port} is in use")
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
            log_dir = self.location
        else:
            self._scratch = Path(tempfile.mkdtemp(prefix="blobmount-azurite-"))
            log_dir = self._scratch
        self.log_path = log_dir / "azurite.log"
        on_main_thread = threading.current_thread() is threading.main_thread()
        try:
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self._command(binary),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=log_dir,
                    start_new_session=True,
                    # The death signal follows the starting *thread*: only tie Azurite to
                    # the main thread, which lives as long as the process.
                    preexec_fn=_die_with_parent if on_main_thread else None,
                )
        except OSError as exc:
            self.stop()
            raise BlobmountError(f"cannot start Azurite ({binary}): {exc}") from exc
        self.pid = self._process.pid
        try:
            self._wait_until_listening(time.monotonic() + timeout, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_until_listening(self, deadline: float, timeout: float) -> None:
        assert self._process is not None
        while not _accepts(self.host, self.port):
            if self._process.poll() is not None:
                problem = f"exited with status {self._process.returncode} before listening"
            elif time.monotonic() > deadline:
                problem = f"did not listen within {timeout:g} s"
            else:
                time.sleep(_POLL_INTERVAL)
                continue
            raise BlobmountError(
                f"Azurite {problem} on {self.host}:{self.port}: {self._log_tail()}"
            )

    def _log_tail(self) -> str:
        if self.log_path is None:
            return "(no output)"
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                tail = log.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no output)"
        return " | ".join(line.strip() for line in tail.splitlines() if line.strip()) or (
            "(no output)"
        )

    def _signal(self, signum: int) -> None:
        """Send `signum` to Azurite's process group (its PID: it leads its own session)."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Azurite: SIGTERM, then SIGKILL if it has not exited after `timeout` s."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    process.wait()
            self._process = None
            self.pid = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
            self.log_path = None

    def __enter__(self) -> Azurite:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
