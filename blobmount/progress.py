"""A one-line progress bar for long requests (prefetch): files, bytes and rate.

`format_progress` is pure (tested on its own); `ProgressBar` redraws it in place on a
terminal, a few times a second at most, and draws nothing when the stream is not a
terminal (a pipe, a log file).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_EVERY = 0.1  # seconds
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(count: float) -> str:
    """Bytes with a 1024-based unit: 0 B, 512 B, 1.5 KiB, 12.0 MiB, 3.2 GiB."""
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_progress(files_done: int, files_total: int, bytes_done: int, bytes_total: int,
                    elapsed: float, *, width: int = BAR_WIDTH) -> str:
    """`[#####.....]  45/303 files  12.0 MiB/80.0 MiB  4.0 MiB/s`.

    The bar follows the bytes (the files when there are no bytes to count); the rate is
    the average since the start, left out for the first half second.
    """
    if bytes_total > 0:
        fraction = bytes_done / bytes_total
    elif files_total > 0:
        fraction = files_done / files_total
    else:
        fraction = 1.0
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * width)
    bar = "#" * filled + "." * (width - filled)
    line = (f"[{bar}] {files_done}/{files_total} files"
            f"  {human_bytes(bytes_done)}/{human_bytes(bytes_total)}")
    if elapsed >= 0.5:
        line += f"  {human_bytes(bytes_done / elapsed)}/s"
    return line


class ProgressBar:
    """Draws `format_progress` in place on `stream`, if it is a terminal."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = 0.0
        self._last: tuple[int, int, int, int] | None = None
        self._width = 0

    def update(self, files_done: int, files_total: int, bytes_done: int, bytes_total: int,
               *, force: bool = False) -> None:
        self._last = (files_done, files_total, bytes_done, bytes_total)
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < REDRAW_EVERY):
            return
        self._drawn = now
        line = format_progress(*self._last, now - self._started)
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()

    def close(self) -> None:
        """Draw the last state and end the line."""
        if self.enabled and self._last is not None:
            self.update(*self._last, force=True)
            self.stream.write("\n")
            self.stream.flush()
