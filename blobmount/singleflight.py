"""Single-flight: one run of a task per key, however many callers wait for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import trio


class _Flight:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Callers asking for the same key while a run is under way share its outcome."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}

    def running(self, key: Hashable) -> bool:
        return key in self._flights

    async def run(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result
        flight = self._flights[key] = _Flight()
        try:
            flight.result = await work()
            return flight.result
        except BaseException as exc:
            # Waiters see the leader's failure; a cancelled leader fails them plainly.
            flight.error = exc if isinstance(exc, Exception) else RuntimeError("interrupted")
            raise
        finally:
            del self._flights[key]
            flight.done.set()
