"""The progress bar of `blobmount prefetch`: its text, and that it draws only on a
terminal."""

from __future__ import annotations

import io

import pytest

from blobmount import progress
from blobmount.progress import ProgressBar, format_progress, human_bytes

MiB = 1024 * 1024


@pytest.mark.parametrize(("count", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5 * MiB, "5.0 MiB"), (3 * 1024**3 + 1024**3 // 5, "3.2 GiB"), (1024**6, "1024.0 PiB"),
])
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


def test_progress_line_follows_the_bytes_and_shows_the_rate() -> None:
    line = format_progress(45, 303, 20 * MiB, 80 * MiB, 5.0, width=20)
    assert line == "[#####...............] 45/303 files  20.0 MiB/80.0 MiB  4.0 MiB/s"


def test_no_rate_in_the_first_half_second_and_full_bar_at_the_end() -> None:
    assert format_progress(0, 10, 0, 100, 0.1, width=4) == "[....] 0/10 files  0 B/100 B"
    assert format_progress(10, 10, 100, 100, 2.0, width=4).startswith("[####] 10/10 files")


def test_files_count_when_there_are_no_bytes() -> None:
    assert format_progress(1, 2, 0, 0, 0, width=4).startswith("[##..] 1/2 files")
    assert format_progress(0, 0, 0, 0, 0, width=4).startswith("[####] 0/0 files")


def test_overshoot_is_clamped() -> None:
    assert format_progress(3, 2, 300, 100, 1.0, width=4).startswith("[####]")


def test_bar_draws_nothing_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    assert bar.enabled is False
    bar.update(1, 2, 3, 4)
    bar.close()
    assert stream.getvalue() == ""


def test_bar_redraws_in_place_and_ends_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = ProgressBar(stream, enabled=True)
    bar.update(1, 3, 10, 30)
    bar.update(2, 3, 20, 30)  # too soon: not drawn
    clock[0] += 1.0
    bar.update(3, 3, 30, 30)
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert [frame.split("]")[1].split("files")[0].strip() for frame in frames] == [
        "1/3", "3/3", "3/3"]
    assert stream.getvalue().endswith("\n")
    assert "30 B/s" in frames[-1]
