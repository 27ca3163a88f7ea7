"""Cache limits: the eviction policy as a pure function over records, and the task
that applies it to a real store and real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount.cache import Cache
from blobmount.cachetables import CopyState
from blobmount.config import Account, MountEntry
from blobmount.decide import BLOCK
from blobmount.eviction import (
    EVICT_INTERVAL,
    Evictor,
    Limits,
    blobs_prefix,
    cache_space,
    plan_eviction,
)
from blobmount.store import CachedFile, Store

NOW = 1_700_000_000.0


def record(name: str, size: int, age: float, state: str = "clean") -> CachedFile:
    """A cached file last used `age` seconds before NOW."""
    return CachedFile(path=f"/c/blobs/{name}", blob=name, etag="e", size=size, state=state,
                      last_access=NOW - age)


def names(files: list[CachedFile]) -> list[str]:
    return [f.blob for f in files]


def test_no_limits_evict_nothing() -> None:
    files = [record("a", 10**9, 10**6)]
    assert plan_eviction(files, Limits(), now=NOW) == []


def test_under_the_limit_nothing_goes() -> None:
    files = [record("a", 40, 5), record("b", 60, 1)]
    assert plan_eviction(files, Limits(max_bytes=100), now=NOW) == []


def test_over_the_limit_least_recently_used_go_down_to_the_low_watermark() -> None:
    files = [record("new", 30, 1), record("old", 30, 100), record("mid", 30, 50),
             record("older", 30, 200)]
    # 120 bytes, limit 100: down to 80 means two of 30 go, oldest use first.
    assert names(plan_eviction(files, Limits(max_bytes=100, low_watermark=0.8), now=NOW)) == [
        "older", "old"]
    # Down to 50%: three go.
    assert names(plan_eviction(files, Limits(max_bytes=100, low_watermark=0.5), now=NOW)) == [
        "older", "old", "mid"]


def test_dirty_and_kept_files_never_go_but_count() -> None:
    files = [record("dirty", 90, 1000, state="dirty"), record("pending", 50, 900),
             record("open", 50, 800), record("clean", 10, 1)]
    chosen = plan_eviction(files, Limits(max_bytes=100), now=NOW,
                           keep={"/c/blobs/pending", "/c/blobs/open"})
    # 200 bytes; only the clean, unkept file may go, and it does, though not enough.
    assert names(chosen) == ["clean"]


def test_age_limit_drops_unused_files_whatever_the_size() -> None:
    files = [record("stale", 1, 120), record("fresh", 1, 10), record("edge", 1, 60),
             record("dirty", 1, 1000, state="dirty")]
    assert names(plan_eviction(files, Limits(max_age=60), now=NOW)) == ["stale", "edge"]


def test_age_and_size_together() -> None:
    files = [record("stale", 10, 500), record("a", 50, 30), record("b", 50, 20),
             record("c", 50, 10)]
    chosen = plan_eviction(files, Limits(max_bytes=100, max_age=100, low_watermark=0.8),
                           now=NOW)
    # stale goes for its age (150 left), then LRU until at most 80: a and b.
    assert names(chosen) == ["stale", "a", "b"]


def test_ties_in_last_use_break_by_path_so_plans_are_stable() -> None:
    files = [record("b", 10, 5), record("a", 10, 5), record("c", 10, 5)]
    assert names(plan_eviction(files, Limits(max_bytes=25, low_watermark=0.5), now=NOW)) == [
        "a", "b"]


# --------------------------------------------------------------------------- the task


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "meta" / "blobmount.sqlite")
    yield opened
    opened.close()


def entry(tmp_path: Path, **limits) -> MountEntry:
    account = Account(name="a", account_name="acct", endpoint="https://acct.blob.core.windows.net",
                      account_key="a2V5")
    return MountEntry(local="data", account=account, container="cont", prefix="",
                      cache_dir=tmp_path / "cache", **limits)


def put(cache: Cache, mount: MountEntry, blob: str, size: int, *, state: str = "clean",
        last_access: float | None = None) -> Path:
    path = cache.path_for(mount, blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    cache.record(path, blob=blob, etag="e", size=size, state=state)
    if last_access is not None:
        cache.store._db.execute("UPDATE cached_files SET last_access = ? WHERE path = ?",
                                (last_access, str(path)))
    return path


def test_the_task_drops_files_and_their_records(tmp_path: Path, store: Store) -> None:
    mount = entry(tmp_path, cache_max_bytes=250)
    cache = Cache(store)
    old = put(cache, mount, "old", 100, last_access=NOW - 100)
    opened = put(cache, mount, "open", 100, last_access=NOW - 90)
    new = put(cache, mount, "new", 100, last_access=NOW - 1)
    written = put(cache, mount, "written", 10, state="dirty", last_access=NOW - 1000)
    written.write_bytes(b"y" * 200)  # grown since its last close: the file counts
    evictor = Evictor(store, cache, [mount], low_watermark=0.8)
    evictor.protect(lambda: {str(opened)})
    assert evictor.folder_bytes(mount) == 500
    assert evictor.pass_once(now=NOW) == (2, 200)  # old, then new; open and dirty stay
    assert not old.exists() and not new.exists() and opened.exists() and written.exists()
    assert store.cached_file(str(old)) is None
    assert evictor.evicted == {"files": 2, "bytes": 200}
    # Still over only because a file is open: it tries again soon.
    assert evictor._interval() < 1


def test_bytes_arriving_count_so_the_limit_holds_while_a_window_fills() -> None:
    files = [record("old", 40, 100), record("new", 40, 1)]
    # 80 bytes landed under a limit of 100: nothing goes, unless 30 more are on their way.
    assert plan_eviction(files, Limits(max_bytes=100), now=NOW) == []
    assert names(plan_eviction(files, Limits(max_bytes=100, low_watermark=0.8), now=NOW,
                               arriving=30)) == ["old"]


def test_the_task_counts_blocks_being_fetched_into_its_folder(tmp_path: Path,
                                                              store: Store) -> None:
    """Blocks on their way (blocks.arriving) count toward their folder's limit; another
    folder's count only there."""
    mount = entry(tmp_path, cache_max_bytes=250)
    cache = Cache(store)
    old = put(cache, mount, "old", 100, last_access=NOW - 100)
    new = put(cache, mount, "new", 100, last_access=NOW - 1)
    evictor = Evictor(store, cache, [mount], low_watermark=0.8)
    elsewhere = str(tmp_path / "other" / "blobs" / "x")
    arriving = {f"{new}\0{0}": 10, f"{elsewhere}\0{0}": 500}
    evictor.expect(lambda: arriving)
    assert evictor.pass_once(now=NOW) == (0, 0)  # 200 + 10 of the limit's 250
    arriving[f"{new}\0{1 << 19}"] = 60
    assert evictor.pass_once(now=NOW) == (1, 100)  # 270 of 250: down to 200 or less
    assert not old.exists() and new.exists()


def test_blocks_are_listed_only_when_the_folder_is_over_its_limit(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream wakes the task after every GET: within the limit, a pass sums the
    records and lists none of a partial copy's blocks; over it, the oldest blocks go."""
    mount = entry(tmp_path, cache_max_bytes=3 * BLOCK)
    cache = Cache(store)
    path = cache.path_for(mount, "huge")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as sparse:
        sparse.truncate(100 * BLOCK)  # its st_size is no measure of what it holds
    cache.record(path, blob="huge", etag="e", size=0, state=CopyState.PARTIAL)
    store.add_cached_blocks(str(path), [(0, BLOCK, 1), (BLOCK, BLOCK, 2)])
    evictor = Evictor(store, cache, [mount], low_watermark=0.5)
    listed: list[str] = []
    blocks_of = store.cached_blocks
    monkeypatch.setattr(store, "cached_blocks",
                        lambda under: listed.append(under) or blocks_of(under))
    assert evictor.pass_once(now=NOW) == (0, 0)
    assert listed == []
    store.add_cached_blocks(str(path), [(2 * BLOCK, BLOCK, 3), (3 * BLOCK, BLOCK, 4)])
    store._db.execute("UPDATE cached_blocks SET last_access = start")  # oldest first
    assert evictor.pass_once(now=NOW) == (0, 3 * BLOCK)  # 4 blocks of 3: to 1.5 or less
    assert listed == [blobs_prefix(mount)]
    assert list(store.cached_blocks_in(str(path), 0, 100 * BLOCK)) == [3 * BLOCK]


def test_the_task_retries_a_blocked_folder_less_and_less_often(tmp_path: Path,
                                                               store: Store) -> None:
    """Over its limit only because a clean file is open: the task tries again after
    0.5 s, then twice as long each time up to EVICT_INTERVAL; a wake (the file closed)
    brings a pass at once. Time is the subject, so it runs on trio's virtual clock."""
    mount = entry(tmp_path, cache_max_bytes=150)
    cache = Cache(store)
    opened = put(cache, mount, "open", 200)
    in_use = {str(opened)}
    evictor = Evictor(store, cache, [mount], low_watermark=0.8)
    evictor.protect(lambda: in_use)
    passes: list[float] = []
    pass_once = evictor.pass_once

    def timed(now: float | None = None) -> tuple[int, int]:
        passes.append(trio.current_time())
        return pass_once(now)

    evictor.pass_once = timed  # type: ignore[method-assign]

    async def main() -> list[float]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(evictor.run)
            await trio.sleep(40)
            blocked = list(passes)
            in_use.clear()  # closed: the kernel released it
            evictor.wake()
            await trio.sleep(70)
            nursery.cancel_scope.cancel()
        return blocked

    clock = trio.testing.MockClock(autojump_threshold=0)
    start = clock.current_time()
    blocked = trio.run(main, clock=clock)
    assert [when - start for when in blocked] == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    # Woken at 40 s: the copy goes, the folder is within its limit, and the task
    # comes back every EVICT_INTERVAL.
    assert [when - start for when in passes[len(blocked):]] == [
        40, 40 + EVICT_INTERVAL, 40 + 2 * EVICT_INTERVAL]
    assert not opened.exists() and evictor.evicted == {"files": 1, "bytes": 200}


def test_written_files_on_a_drop_after_upload_entry_go_once_clean(tmp_path: Path,
                                                                   store: Store) -> None:
    mount = entry(tmp_path, drop_after_upload=True)
    cache = Cache(store)
    read = put(cache, mount, "read", 10)
    written = put(cache, mount, "written", 10)
    busy = {str(written)}
    evictor = Evictor(store, cache, [mount], low_watermark=0.8)
    evictor.protect(lambda: busy)
    evictor.uploaded(mount, "written")
    assert evictor.pass_once() == (0, 0)  # still open
    busy.clear()
    assert evictor.pass_once() == (1, 10)
    assert read.exists() and not written.exists()
    # An entry that keeps its copies ignores uploads.
    keeping = entry(tmp_path / "other")
    evictor_keeping = Evictor(store, cache, [keeping], low_watermark=0.8)
    evictor_keeping.uploaded(keeping, "x")
    assert evictor_keeping._drop_after_upload == set()


def test_statfs_space_is_the_limits_when_every_entry_has_one(tmp_path: Path,
                                                            store: Store) -> None:
    first = entry(tmp_path, cache_max_bytes=1000)
    second = MountEntry(local="b", account=first.account, container="c", prefix="",
                        cache_dir=tmp_path / "cache-b", cache_max_bytes=500)
    cache = Cache(store)
    put(cache, first, "f", 300)
    put(cache, second, "g", 700)
    assert cache_space([first, second], store) == (1500, 500)
    assert blobs_prefix(first) == f"{tmp_path / 'cache' / 'blobs'}/"
    unlimited = entry(tmp_path)
    total, free = cache_space([unlimited], store)
    assert total - free == 300 and free > 0


def test_a_pass_within_the_limit_reads_no_copys_record(tmp_path: Path, store: Store,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download wakes the evictor: within the limit it sums sizes in sqlite and
    reads only the dirty copies' records (a pass over 100,000 copies took 0.5 s)."""
    mount = entry(tmp_path, cache_max_bytes=10_000)
    cache = Cache(store)
    for index in range(5):
        put(cache, mount, f"f{index}", 100)
    written = put(cache, mount, "written", 10, state="dirty")
    written.write_bytes(b"y" * 200)
    evictor = Evictor(store, cache, [mount], low_watermark=0.8)
    read: list[object] = []
    listed = store.cached_files
    monkeypatch.setattr(store, "cached_files", lambda *args, **kwargs: read.append(kwargs)
                        or listed(*args, **kwargs))
    assert evictor.pass_once() == (0, 0)
    assert evictor.folder_bytes(mount) == 700
    assert read and all(kwargs == {"state": CopyState.DIRTY} for kwargs in read)
