"""Names and times the write path gives blobs: `mtime` metadata (rclone's RFC 3339, read
back to the nanosecond) and the names of conflicting versions."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blobmount.azure import format_mtime, parse_mtime
from blobmount.azure.listing import blob_mtime_ns
from blobmount.uploads import conflict_name


def test_format_is_rfc3339_with_nanoseconds_in_utc() -> None:
    assert format_mtime(1_500_000_000_123_456_789) == "2017-07-14T02:40:00.123456789Z"
    assert format_mtime(0) == "1970-01-01T00:00:00.000000000Z"


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_parse_inverts_format(mtime_ns: int) -> None:
    assert parse_mtime(format_mtime(mtime_ns)) == mtime_ns


@pytest.mark.parametrize(("text", "expected"), [
    ("2017-07-14T02:40:00Z", 1_500_000_000 * 10**9),
    ("2017-07-14T02:40:00.5Z", 1_500_000_000 * 10**9 + 500_000_000),
    ("2017-07-14T04:40:00.25+02:00", 1_500_000_000 * 10**9 + 250_000_000),
    ("2017-07-14T02:40:00+00:00", 1_500_000_000 * 10**9),
    ("2017-07-14T02:40:00.1234567891234Z", 1_500_000_000_123_456_789),
    ("", None), (None, None), ("yesterday", None), ("2017-13-45T99:00:00Z", None),
])
def test_parse_examples(text: str | None, expected: int | None) -> None:
    assert parse_mtime(text) == expected


def test_metadata_wins_over_last_modified_unless_it_is_not_a_time() -> None:
    modified = dt.datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    exact = int(modified.replace(microsecond=0).timestamp()) * 10**9 + 678_901_000
    assert blob_mtime_ns(modified) == exact
    assert blob_mtime_ns(modified, {"mtime": "2017-07-14T02:40:00Z"}) == 1_500_000_000 * 10**9
    assert blob_mtime_ns(modified, {"mtime": "garbage"}) == exact
    assert blob_mtime_ns(None) == 0


@pytest.mark.parametrize(("blob", "expected"), [
    ("notes.txt", "notes.conflict-20250102T030405Z.txt"),
    ("dir/sub/archive.tar.gz", "dir/sub/archive.conflict-20250102T030405Z.tar.gz"),
    ("Makefile", "Makefile.conflict-20250102T030405Z"),
    (".bashrc", ".bashrc.conflict-20250102T030405Z"),
    ("a/.hidden.txt", "a/.hidden.txt.conflict-20250102T030405Z"),
])
def test_conflict_names_sit_beside_the_blob(blob: str, expected: str) -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert conflict_name(blob, when) == expected
