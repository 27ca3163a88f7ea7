"""The task dump (SIGUSR1): each task with the innermost line of ours it waits at."""

import logging

import trio
import trio.testing

from blobmount.taskdump import describe_tasks, log_tasks_on


def test_a_task_is_shown_at_the_line_of_ours_it_waits_at(caplog) -> None:
    async def main() -> list[str]:
        send, receive = trio.open_memory_channel[int](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log_tasks_on, receive, name="the dumper")
            await trio.testing.wait_all_tasks_blocked()
            lines = describe_tasks()
            await send.send(10)  # a signal: the dumper logs the tasks
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        return lines

    with caplog.at_level(logging.WARNING, logger="blobmount.taskdump"):
        lines = trio.run(main)
    dumper = next(line for line in lines if "the dumper" in line)
    assert dumper.startswith("  ")  # a child of the run's main task
    assert "blobmount/taskdump.py:" in dumper and dumper.endswith(" log_tasks_on")
    assert "the dumper: blobmount/taskdump.py:" in caplog.text
