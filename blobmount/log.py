"""Logging setup, and the redaction that keeps secrets out of every log line.

Account keys and SAS signatures must never reach a log, an error message or a status
reply. Config loading registers every secret it reads with `register_secret`; every
log record passes through `redact` on its way out, and so does any text that came
from outside (AzCopy's output, an SDK exception) before it is put in an error.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from pathlib import Path

_secrets: set[str] = set()

# A SAS signature in a URL or a token: `sig=...` up to the next separator.
_SAS_SIG = re.compile(r"(?i)(sig=)[^&\s'\"]+")
# An account key in a connection string.
_ACCOUNT_KEY = re.compile(r"(?i)(AccountKey=)[^;\s'\"]+")
_MASK = "REDACTED"


def register_secret(secret: str | None) -> None:
    """Remember a secret so that `redact` removes it from any text."""
    if secret and len(secret) >= 8:
        _secrets.add(secret)


def redact(text: str) -> str:
    """Return `text` with every registered secret and SAS signature masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    text = _SAS_SIG.sub(rf"\1{_MASK}", text)
    return _ACCOUNT_KEY.sub(rf"\1{_MASK}", text)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(verbosity: int, log_file: Path | None, *, stderr: bool = False) -> None:
    """Send log records to `log_file` (and to stderr when `stderr`), redacted.

    verbosity 0 logs warnings, 1 info, 2 and more debug. The Azure SDK's own loggers
    stay at warning below -vv, since at info they log every request.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    formatter = _RedactingFormatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    handlers: list[logging.Handler] = []
    loose: int | None = None
    if log_file is not None:
        loose = make_log_private(log_file)
        handlers.append(logging.FileHandler(log_file))
    if stderr or log_file is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("azure").setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
    if loose is not None:
        logging.getLogger(__name__).warning(
            "log file %s could be read by other users (mode %04o): made 0600", log_file, loose)


def make_log_private(path: Path, *, tighten: bool = True) -> int | None:
    """Create the log file `path` as 0600 (its folder, if new, as 0700), whatever the
    umask: it names blobs and mount points. With `tighten`, a regular file of ours with
    looser modes is made 0600 and its old mode returned (None: nothing was loose).
    Anything else (a FIFO, /dev/stderr, another user's file) is left as it is."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if (tighten and stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
                and mode & 0o077):
            os.fchmod(fd, mode & 0o700)
            return mode
    finally:
        os.close(fd)
    return None
