"""Keeping background work from taking the mount down.

Every background task of the daemon runs in its one nursery, and an exception a task
does not expect would end the nursery, and with it the mount. So a one-off task (a
read-ahead fetch, a control request, one upload) runs `guarded`: its failure is
logged once with its cause and goes no further; a worker that should live as long as
the mount (the upload worker, the evictor) runs `supervised`: it
is restarted after a pause that doubles while it keeps failing.

`fault(point)` lets a test make a chosen point fail: `BLOBMOUNT_TEST_FAULTS` names
points with how many times each fails (`read_ahead:1,upload_worker:2`). Unset, as
in every real run, it costs one dict lookup.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Seconds before a failed worker's first restart; doubled up to RESTART_MAX.
RESTART_MIN = 0.5
RESTART_MAX = 30.0
#: A worker that ran this long before failing starts again from the shortest pause.
HEALTHY_RUN = 60.0
FAULTS_VARIABLE = "BLOBMOUNT_TEST_FAULTS"


class InjectedFault(RuntimeError):
    """Raised where a test asked for a failure (`BLOBMOUNT_TEST_FAULTS`)."""


def _read_faults(text: str) -> dict[str, int]:
    faults: dict[str, int] = {}
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        if name:
            faults[name] = int(count) if count.strip().isdigit() else 1
    return faults


_faults = _read_faults(os.environ.get(FAULTS_VARIABLE, ""))


def fault(point: str) -> None:
    """Raise InjectedFault if a test asked `point` to fail (and it has failures left)."""
    if _faults.get(point, 0) > 0:
        _faults[point] -= 1
        raise InjectedFault(f"fault injected at {point}")


async def guarded(what: str, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run one task; an exception it raises is logged (once, with its traceback) and
    stops here. Cancellation passes, as it must."""
    try:
        await function(*args)
    except Exception:
        log.exception("%s failed; the mount goes on", what)


async def supervised(what: str, function: Callable[[], Awaitable[Any]]) -> None:
    """Run a long-lived worker until cancelled, starting it again whenever it raises
    (or returns), after a pause that doubles while it keeps failing."""
    pause = RESTART_MIN
    while True:
        started = trio.current_time()
        try:
            await function()
            log.warning("%s ended by itself; starting it again", what)
        except Exception:
            log.exception("%s failed; starting it again in %.1f s", what, pause)
        if trio.current_time() - started >= HEALTHY_RUN:
            pause = RESTART_MIN
        await trio.sleep(pause)
        pause = min(pause * 2, RESTART_MAX)
