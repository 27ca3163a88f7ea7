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
        self.abandoned = False  # the leader was cancelled: a waiter takes over


class SingleFlight:
    """Callers asking for the same key while a run is under way share its outcome."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}

    def running(self, key: Hashable) -> bool:
        return key in self._flights

    def running_keys(self) -> list[Hashable]:
        """The keys whose runs are under way."""
        return list(self._flights)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.abandoned:
                continue
            if flight.error is not None:
                raise flight.error
            return flight.result
        flight = self._flights[key] = _Flight()
        try:
            flight.result = await work()
            return flight.result
        except Exception as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.abandoned = True
            raise
        finally:
            del self._flights[key]
            flight.done.set()
