"""The daemon's threads share the interpreter: the trio thread, which answers the
kernel, waits for the GIL no longer than `threads.SWITCH_INTERVAL`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from blobmount import daemon
from blobmount.threads import SWITCH_INTERVAL


def test_the_daemon_runs_its_loop_at_the_short_switch_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def run(*args: Any, **kwargs: Any) -> None:
        seen.append(sys.getswitchinterval())

    monkeypatch.setattr(daemon.trio, "run", run)
    before, umask = sys.getswitchinterval(), os.umask(0o022)
    try:
        daemon.run_daemon(None, Path("/nonexistent"), ready=lambda note: None)
    finally:
        sys.setswitchinterval(before)
        os.umask(umask)
    # Python's own is 5 ms: a tenth of it.
    assert seen == [pytest.approx(SWITCH_INTERVAL)] and SWITCH_INTERVAL <= 0.0005
