"""SingleFlight: one run per key however many callers wait, its outcome shared.

Plain trio.run (pytest-trio is not a dependency); `wait_all_tasks_blocked` lets every
caller reach its wait before the work is let go, so no test depends on timing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from blobmount.singleflight import SingleFlight

CALLERS = 10


class Work:
    """Work for one key that waits for `release` and counts its runs."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.release = trio.Event()
        self.runs = 0
        self.result = result
        self.error = error

    async def __call__(self) -> Any:
        self.runs += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def _call_all(flight: SingleFlight, key: Any, work: Work, outcomes: list,
                    callers: int = CALLERS) -> None:
    async def caller() -> None:
        try:
            outcomes.append(("ok", await flight.run(key, work)))
        except Exception as exc:
            outcomes.append(("error", exc))

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert flight.running(key)
        assert work.runs == 1
        work.release.set()


def test_concurrent_callers_share_one_run() -> None:
    async def main() -> None:
        flight = SingleFlight()
        result = object()
        work = Work(result)
        outcomes: list = []
        await _call_all(flight, "k", work, outcomes)
        assert work.runs == 1
        assert len(outcomes) == CALLERS
        assert all(kind == "ok" and value is result for kind, value in outcomes)
        assert not flight.running("k")

    trio.run(main)


def test_an_exception_reaches_every_waiter() -> None:
    async def main() -> None:
        flight = SingleFlight()
        work = Work(error=ValueError("boom"))
        outcomes: list = []
        await _call_all(flight, "k", work, outcomes)
        assert work.runs == 1
        assert len(outcomes) == CALLERS
        for kind, exc in outcomes:
            assert kind == "error" and isinstance(exc, ValueError) and str(exc) == "boom"
        assert not flight.running("k")

    trio.run(main)


def test_a_call_after_completion_runs_again() -> None:
    async def main() -> None:
        flight = SingleFlight()
        runs = Counter[str]()

        async def work() -> int:
            runs["k"] += 1
            await trio.sleep(0)
            return runs["k"]

        assert await flight.run("k", work) == 1
        assert await flight.run("k", work) == 2
        assert runs["k"] == 2

    trio.run(main)


def test_a_call_after_a_failure_runs_again() -> None:
    async def main() -> None:
        flight = SingleFlight()
        failing = Work(error=OSError("down"))
        failing.release.set()
        with pytest.raises(OSError, match="down"):
            await flight.run("k", failing)
        succeeding = Work("fine")
        succeeding.release.set()
        assert await flight.run("k", succeeding) == "fine"
        assert (failing.runs, succeeding.runs) == (1, 1)

    trio.run(main)


def test_different_keys_run_independently() -> None:
    async def main() -> None:
        flight = SingleFlight()
        slow, fast = Work("slow"), Work("fast")
        got: dict[str, list] = {"a": [], "b": []}

        async def caller(key: str, work: Work) -> None:
            got[key].append(await flight.run(key, work))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(caller, "a", slow)
                nursery.start_soon(caller, "b", fast)
            await trio.testing.wait_all_tasks_blocked()
            assert (slow.runs, fast.runs) == (1, 1)  # one run each, at the same time
            assert flight.running("a") and flight.running("b")
            fast.release.set()  # b finishes while a is still under way
            await trio.testing.wait_all_tasks_blocked()
            assert got == {"a": [], "b": ["fast"] * 3}
            assert flight.running("a") and not flight.running("b")
            slow.release.set()
        assert got == {"a": ["slow"] * 3, "b": ["fast"] * 3}
        assert (slow.runs, fast.runs) == (1, 1)

    trio.run(main)


def test_keys_are_compared_by_value() -> None:
    """Downloads key flights by Path: two equal paths built apart are one key."""
    async def main() -> None:
        flight = SingleFlight()
        work = Work("one")
        got: list = []

        async def caller(key: Path) -> None:
            got.append(await flight.run(key, work))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, Path("/cache/blobs/ab") / "abcd")
            nursery.start_soon(caller, Path("/cache/blobs/ab/abcd"))
            await trio.testing.wait_all_tasks_blocked()
            work.release.set()
        assert got == ["one", "one"] and work.runs == 1

    trio.run(main)


def test_a_cancelled_waiter_leaves_the_run_alone() -> None:
    async def main() -> None:
        flight = SingleFlight()
        work = Work("done")
        results: list = []

        async def leader() -> None:
            results.append(await flight.run("k", work))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0) as scope:
                await flight.run("k", work)
            assert scope.cancelled_caught
            assert flight.running("k")
            work.release.set()
        assert results == ["done"] and work.runs == 1

    trio.run(main)


def test_a_waiter_takes_over_when_the_leader_is_cancelled() -> None:
    async def main() -> None:
        flight = SingleFlight()
        work = Work("done")
        outcomes: list = []

        async def waiter() -> None:
            try:
                outcomes.append(("ok", await flight.run("k", work)))
            except Exception as exc:
                outcomes.append(("error", exc))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                leader_scope = trio.CancelScope()

                async def leader() -> None:
                    with leader_scope:
                        await flight.run("k", work)

                nursery.start_soon(leader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                leader_scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                work.release.set()
        assert outcomes == [("ok", "done")]
        assert work.runs == 2
        assert not flight.running("k")

    trio.run(main)


def test_a_waiter_still_gets_the_result_when_the_leader_is_cancelled() -> None:
    async def main() -> None:
        flight = SingleFlight()
        runs = 0
        release = trio.Event()

        async def work() -> str:
            nonlocal runs
            runs += 1
            await release.wait()
            return "done"

        got: list = []
        async with trio.open_nursery() as nursery:
            leader_scope = trio.CancelScope()

            async def leader() -> None:
                with leader_scope:
                    await flight.run("k", work)

            async def reader() -> None:
                got.append(await flight.run("k", work))

            nursery.start_soon(leader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            leader_scope.cancel()  # the read-ahead stops...
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert got == ["done"]  # ...and the reader is still served

    trio.run(main)
