"""What every trio task of the daemon is waiting on, for a mount that seems stuck.

`kill -USR1 <pid>` puts one line per task in the log: its name and the innermost
line of ours it is at (`blobmount/blocks.py:245 ensure`). faulthandler shows threads
only, and every task of the daemon runs in one thread; a handler that never returns
keeps `fusermount -u` from ending the daemon, and this says which.
"""

from __future__ import annotations

import logging
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import trio

log = logging.getLogger(__name__)

_PACKAGE = str(Path(__file__).parent)


def _frames(coroutine: object) -> Iterator[types.FrameType]:
    """The frames of a task's chain of awaits, outermost first."""
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is not None:
            yield frame
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom",
                                                                      None)


def _where(task: trio.lowlevel.Task) -> str:
    frames = list(_frames(task.coro))
    if not frames:
        return "(running)"
    ours = [frame for frame in frames if frame.f_code.co_filename.startswith(_PACKAGE)]
    frame = (ours or frames)[-1]
    name = Path(frame.f_code.co_filename)
    shown = f"blobmount/{name.relative_to(_PACKAGE)}" if ours else name.name
    return f"{shown}:{frame.f_lineno} {frame.f_code.co_name}"


def describe_tasks() -> list[str]:
    """One line per task under the run's root: `name: where it waits`."""
    lines: list[str] = []

    def visit(task: trio.lowlevel.Task, depth: int) -> None:
        lines.append(f"{'  ' * depth}{task.name}: {_where(task)}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                visit(child, depth + 1)

    root = trio.lowlevel.current_root_task()
    if root is not None:
        visit(root, 0)
    return lines


async def log_tasks_on(signals: AsyncIterator[int]) -> None:
    """Log the tasks each time one of `signals` comes."""
    async for _ in signals:
        tasks = describe_tasks()
        log.warning("%d tasks:\n%s", len(tasks), "\n".join(tasks))
