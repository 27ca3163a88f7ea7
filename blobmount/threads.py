"""`Threads`: the daemon's one bound on worker threads.

Every blocking call the daemon makes (the storage client's requests, and local work:
MD5s, preads, fsyncs, installs) runs in a worker thread through `Threads.run_sync`, so
one `trio.CapacityLimiter` counts them all. The storage client's calls go through
`azure.AsyncContainer`, which holds one of these; modules with only local work hold
it directly. A module that bounds its own concurrency for a reason of its own does
so with a count of tasks (a `trio.Semaphore`), never with a second thread limiter.

The trio thread answers the kernel; the worker threads run Python too (the SDK's
pipeline for each upload), and each time the trio thread wakes it waits for the GIL
until the interpreter's switch interval (5 ms) makes a busy worker let it go.
`SWITCH_INTERVAL` is what the daemon sets instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import trio

#: Seconds a thread holds the GIL while another waits for it. What `tar x` asked of
#: BlobFS (over a fake remote, no FUSE) beside one busy Python thread, per file: 5 ms
#: (Python's default) 27-32 ms, 1 ms 13-17 ms, 0.5 ms 6.4-7.1 ms, 0.2 ms 3.2-8.1 ms
#: (the spread of a machine at load 8); with no busy thread, 2.3 ms. On a real mount
#: at rest, `tar x` of 384 entries took the same at 5 ms and at 0.5 ms (3.2-4.3 s).
SWITCH_INTERVAL = 0.0005

T = TypeVar("T")
Args = TypeVarTuple("Args")


class Threads:
    """Worker threads for blocking calls, at most `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(limit)

    async def run_sync(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        """`fn(*args)` in a worker thread, once a token of the limiter is free."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
