"""`Threads`: the daemon's one bound on worker threads.

Every blocking call the daemon makes (the storage client's requests, and local work:
MD5s, preads, fsyncs, installs) runs in a worker thread through `Threads.run_sync`, so
one `trio.CapacityLimiter` counts them all. The storage client's calls go through
`azure.AsyncContainer`, which holds one of these; modules with only local work hold
it directly. A module that bounds its own concurrency for a reason of its own does
so with a count of tasks (a `trio.Semaphore`), never with a second thread limiter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import trio

T = TypeVar("T")
Args = TypeVarTuple("Args")


class Threads:
    """Worker threads for blocking calls, at most `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(limit)

    async def run_sync(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        """`fn(*args)` in a worker thread, once a token of the limiter is free."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
