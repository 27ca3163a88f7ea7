"""The async upload worker's wait for a burst of closes to end, on a mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from blobmount.burst import Burst


def run(test) -> float:
    """Run `test(burst)` on a mock clock and return the time `Burst.pause` returned."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    ended: list[float] = []

    async def main() -> None:
        await test(Burst(), ended)

    trio.run(main, clock=clock)
    return ended[0]


def closes_every(burst: Burst, interval: float, until: float):
    async def closing() -> None:
        while trio.current_time() + interval <= until:
            await trio.sleep(interval)
            burst.close_seen()
    return closing


def test_with_no_close_it_waits_one_window() -> None:
    async def test(burst: Burst, ended: list[float]) -> None:
        start = trio.current_time()
        await burst.pause(0.5, busy=lambda: False)
        ended.append(trio.current_time() - start)
    assert run(test) == pytest.approx(0.5)


def test_it_waits_while_closes_keep_coming_and_returns_a_window_after_the_last() -> None:
    async def test(burst: Burst, ended: list[float]) -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closes_every(burst, 0.3, start + 2.0))
            await burst.pause(0.5, busy=lambda: False)
            ended.append(trio.current_time() - start)
    # closes at 0.3 .. 1.8; the window from 2.0 to 2.5 holds none
    assert run(test) == pytest.approx(2.5)


def test_an_endless_stream_waits_no_longer_than_the_longest() -> None:
    async def test(burst: Burst, ended: list[float]) -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closes_every(burst, 0.1, start + 60))
            await burst.pause(0.5, busy=lambda: False, longest=5.0)
            ended.append(trio.current_time() - start)
            nursery.cancel_scope.cancel()
    assert run(test) == pytest.approx(5.0)


def test_with_uploads_under_way_it_waits_one_window_only() -> None:
    async def test(burst: Burst, ended: list[float]) -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closes_every(burst, 0.1, start + 60))
            await burst.pause(0.5, busy=lambda: True)
            ended.append(trio.current_time() - start)
            nursery.cancel_scope.cancel()
    assert run(test) == pytest.approx(0.5)
