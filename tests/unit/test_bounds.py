"""What the daemon remembers per path stays bounded however long it runs."""

from __future__ import annotations

from pathlib import Path

from blobmount import transfers
from blobmount.cache import Cache
from blobmount.store import Store
from blobmount.transfers import Downloads


def _downloads(folder: Path) -> Downloads:
    cache = Cache(Store(folder / "blobmount.sqlite"))
    return Downloads(cache, None, sdk_max=0)


def test_download_counts_keep_the_newest_paths_and_the_whole_total(tmp_path: Path) -> None:
    downloads = _downloads(tmp_path)
    for index in range(transfers.STARTED_PATHS_MAX + 50):
        downloads._count(f"data/{index}")
    downloads._count("data/last")
    assert len(downloads.started) == transfers.STARTED_PATHS_MAX
    assert downloads.started_total == transfers.STARTED_PATHS_MAX + 51
    assert "data/0" not in downloads.started and downloads.started["data/last"] == 1


def test_files_fetched_ahead_but_never_opened_are_forgotten(tmp_path: Path) -> None:
    downloads = _downloads(tmp_path)
    for index in range(transfers.FETCHED_AHEAD_MAX * 3):
        downloads._fetched(Path(f"/cache/{index}"))
    assert len(downloads._fetched_ahead) == transfers.FETCHED_AHEAD_MAX
    newest = Path(f"/cache/{transfers.FETCHED_AHEAD_MAX * 3 - 1}")
    assert downloads.walking(newest, downloaded=False)  # still known: the walk goes on
    assert not downloads.walking(Path("/cache/0"), downloaded=False)
