"""Bursts of closes (`tar x`, `git clone`): the async upload worker waits for one to
end before its uploads start, so that they do not take the CPU and the GIL the
burst's own FUSE requests need."""

from __future__ import annotations

from collections.abc import Callable

import trio

#: Seconds at most a batch waits for closes to pause (rclone mount's --vfs-write-back
#: waits 5 s after each close).
BATCH_MAX = 5.0


class Burst:
    """Counts closes, and waits until they pause."""

    def __init__(self) -> None:
        self._closes = 0

    def close_seen(self) -> None:
        self._closes += 1

    async def pause(self, window: float, busy: Callable[[], bool],
                    longest: float = BATCH_MAX) -> None:
        """Return once a whole `window` passes with no close, or at once after the
        first window if `busy()` (uploads run already: a stream longer than `longest`
        keeps them going), or when waiting one more window would pass `longest`."""
        started = trio.current_time()
        while True:
            closes = self._closes
            await trio.sleep(window)
            if (self._closes == closes or busy()
                    or trio.current_time() - started + window > longest):
                return
