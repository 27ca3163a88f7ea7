"""The async upload worker's wait for a burst of closes to end, on a mock clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from blobmount.burst import BATCH_MAX, Burst


def paused_after(*, closes_every: float | None = None, closes_until: float = math.inf,
                 window: float = 0.5, busy: bool = False,
                 longest: float = BATCH_MAX) -> float:
    """Seconds `Burst.pause(window)` took, on a mock clock, while a close came every
    `closes_every` seconds (None: none came) until `closes_until`."""
    took: list[float] = []

    async def closing(burst: Burst) -> None:
        assert closes_every is not None
        while trio.current_time() + closes_every <= closes_until:
            await trio.sleep(closes_every)
            burst.close_seen()

    async def main() -> None:
        burst = Burst()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            if closes_every is not None:
                nursery.start_soon(closing, burst)
            await burst.pause(window, busy=lambda: busy, longest=longest)
            took.append(trio.current_time() - start)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return took[0]


def test_with_no_close_it_waits_one_window() -> None:
    assert paused_after() == pytest.approx(0.5)


def test_it_waits_while_closes_keep_coming_and_returns_a_window_after_the_last() -> None:
    # closes at 0.3 .. 1.8; the window from 2.0 to 2.5 holds none
    assert paused_after(closes_every=0.3, closes_until=2.0) == pytest.approx(2.5)


def test_an_endless_stream_waits_no_longer_than_the_longest() -> None:
    assert paused_after(closes_every=0.1, longest=5.0) == pytest.approx(5.0)


def test_with_uploads_under_way_it_waits_one_window_only() -> None:
    assert paused_after(closes_every=0.1, busy=True) == pytest.approx(0.5)
