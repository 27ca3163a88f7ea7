"""The size and tool decisions (decide.py), at their boundaries."""

from __future__ import annotations

from blobmount import decide
from blobmount.config import Settings

MiB = 1024 * 1024
DEFAULTS = Settings()


def test_downloads_up_to_sdk_download_max_go_by_the_sdk() -> None:
    limit = DEFAULTS.sdk_download_max
    assert decide.download_by_sdk(limit, limit, azcopy_usable=True)
    assert not decide.download_by_sdk(limit + 1, limit, azcopy_usable=True)
    assert decide.download_by_sdk(limit + 1, limit, azcopy_usable=False)


def test_uploads_up_to_sdk_upload_max_go_by_the_sdk() -> None:
    limit = DEFAULTS.sdk_upload_max
    assert decide.upload_by_sdk(limit, limit, azcopy_usable=True)
    assert not decide.upload_by_sdk(limit + 1, limit, azcopy_usable=True)
    assert decide.upload_by_sdk(limit + 1, limit, azcopy_usable=False)


def test_small_blobs_come_by_one_get_larger_ones_in_ranges() -> None:
    assert not decide.fill_in_ranges(decide.SMALL_GET_MAX)
    assert decide.fill_in_ranges(decide.SMALL_GET_MAX + 1)


def test_readers_of_blobs_over_block_read_min_get_blocks() -> None:
    limit = DEFAULTS.block_read_min
    assert not decide.read_by_blocks(limit, limit)
    assert decide.read_by_blocks(limit + 1, limit)


def test_blocks_read_ahead_within_a_quarter_of_a_bounded_cache() -> None:
    assert decide.blocks_window(None, 128 * MiB) == 128 * MiB
    assert decide.blocks_window(100 * MiB, 128 * MiB) == 25 * MiB


def test_a_few_small_files_are_a_batch_of_gets_many_or_large_one_job() -> None:
    limit = DEFAULTS.sdk_download_max
    few = [MiB] * decide.BATCH_SDK_MAX_FILES
    assert decide.batch_by_sdk(few, limit)
    assert not decide.batch_by_sdk([*few, MiB], limit)
    assert not decide.batch_by_sdk([MiB, limit + 1], limit)


def test_read_ahead_takes_files_of_one_get() -> None:
    assert decide.read_ahead_takes(decide.READ_AHEAD_MAX_SIZE)
    assert not decide.read_ahead_takes(decide.READ_AHEAD_MAX_SIZE + 1)


def test_each_journaled_upload_is_a_job_of_its_own() -> None:
    assert decide.upload_jobs(["a", "b"]) == [["a"], ["b"]]
    assert decide.upload_jobs([]) == []
