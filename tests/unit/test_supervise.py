"""Background work that fails alone: a guarded task's exception stops with it, a
supervised worker is started again, and cancellation still ends both."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from blobmount import supervise
from blobmount.supervise import InjectedFault, guarded, supervised


def test_a_failing_worker_is_restarted_and_its_neighbours_go_on(caplog) -> None:
    runs = []
    neighbour = []

    async def worker() -> None:
        runs.append(trio.current_time())
        if len(runs) <= 3:
            raise OSError(28, "No space left on device")
        await trio.sleep_forever()

    async def steady() -> None:
        while True:
            neighbour.append(1)
            await trio.sleep(1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervised, "the test worker", worker)
            nursery.start_soon(steady)
            await trio.sleep(100)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="blobmount.supervise"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(runs) == 4
    # Each restart waits twice as long as the one before.
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:], strict=False)]
    assert gaps == [0.5, 1.0, 2.0]
    assert len(neighbour) >= 99
    failures = [r for r in caplog.records if "the test worker failed" in r.getMessage()]
    assert len(failures) == 3 and all("No space left" in r.exc_text for r in failures)


def test_a_guarded_task_fails_alone_but_is_still_cancelled(caplog) -> None:
    async def boom() -> None:
        raise KeyError("surprise")

    async def main() -> bool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, "one request", boom)
            nursery.start_soon(guarded, "a sleeper", trio.sleep_forever)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
        return True

    with caplog.at_level(logging.ERROR, logger="blobmount.supervise"):
        assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [r.getMessage() for r in caplog.records] == ["one request failed; the mount goes on"]


def test_faults_fire_as_often_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "_faults", supervise._read_faults("a:2, b"))
    for _ in range(2):
        with pytest.raises(InjectedFault, match="fault injected at a"):
            supervise.fault("a")
    supervise.fault("a")
    with pytest.raises(InjectedFault):
        supervise.fault("b")
    supervise.fault("b")
    supervise.fault("never named")
