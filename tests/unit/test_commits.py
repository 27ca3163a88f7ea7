"""Group commit of the upload journal: closes that arrive together share one commit
and one fsync of each folder, and each returns once its own row is committed; a small
file's row holds its bytes instead of its copy being fsynced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from blobmount import commits as commits_module
from blobmount.commits import GroupCommit
from blobmount.decide import JOURNAL_BYTES_MAX
from blobmount.journal import Journaled
from blobmount.store import Store
from blobmount.threads import Threads

#: Seconds the held folder fsync waits: only a test that hangs reaches it.
TIMEOUT = 30.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "meta" / "blobmount.sqlite")
    yield store
    store.close()


def written(folder: Path, name: str, size: int = JOURNAL_BYTES_MAX + 1) -> Path:
    """A written cache file, by default one too large for its journal row."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(name.encode().ljust(size, b"."))
    return path


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the group commit fsyncs, in order (nothing reaches the disk)."""
    calls: list[str] = []
    monkeypatch.setattr(commits_module, "fsync_file", lambda path: calls.append("file"))
    monkeypatch.setattr(commits_module, "fsync_folder", lambda folder: calls.append("folder"))
    return calls


def row(path: Path) -> Journaled:
    return Journaled(str(path), "acct", "cont", path.name, base_etag="")


def test_closes_that_arrive_during_a_commit_share_the_next(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first close commits alone; the five that arrive while it does share one
    commit, and each of their two folders is fsynced once for them."""
    fsynced: list[Path] = []
    first_done = threading.Event()

    def fsync_folder(folder: Path) -> None:
        fsynced.append(folder)
        if len(fsynced) == 1 and not first_done.wait(TIMEOUT):
            raise AssertionError("the test never let the first commit go on")

    monkeypatch.setattr(commits_module, "fsync_folder", fsync_folder)
    commits = GroupCommit(store, Threads(16))
    a, b = tmp_path / "cache" / "a", tmp_path / "cache" / "b"
    first = written(a, "first")
    later = [written(a, f"a{number}") for number in range(3)] + [
        written(b, f"b{number}") for number in range(2)]
    versions: dict[Path, int] = {}

    async def close(path: Path) -> None:
        versions[path] = await commits.journal(row(path))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close, first)
            with trio.fail_after(TIMEOUT):
                while not fsynced:
                    await trio.sleep(0.01)
                for path in later:
                    nursery.start_soon(close, path)
                while commits.waiting < len(later):
                    await trio.sleep(0.01)
            assert first not in versions  # not returned before its commit
            first_done.set()

    trio.run(main)
    assert (commits.groups, commits.rows) == (2, 6)
    assert fsynced[0] == a and sorted(fsynced[1:]) == [a, b]
    assert versions == {path: 1 for path in [first, *later]}
    assert {upload.path for upload in store.uploads()} == {str(p) for p in [first, *later]}


def test_a_file_journaled_twice_at_once_gets_two_versions(
        store: Store, tmp_path: Path) -> None:
    path = written(tmp_path / "cache", "f")
    commits = GroupCommit(store, Threads(4))
    store.queue_upload(str(path), account="acct", container="cont", blob="f", base_etag="")
    versions: list[int] = []

    async def close() -> None:
        versions.append(await commits.journal(row(path)))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            nursery.start_soon(close)

    trio.run(main)
    assert sorted(versions) == [2, 3]
    upload = store.upload(str(path))
    assert upload is not None and upload.version == 3


def test_a_failed_commit_fails_every_close_of_its_group(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(rows: object) -> list[int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "queue_uploads", full)
    commits = GroupCommit(store, Threads(4))
    paths = [written(tmp_path / "cache", f"f{number}") for number in range(3)]
    failures: list[str] = []

    async def close(path: Path) -> None:
        try:
            await commits.journal(row(path))
        except OSError as exc:
            failures.append(exc.strerror or "")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for path in paths:
                nursery.start_soon(close, path)

    trio.run(main)
    assert failures == ["No space left on device"] * 3
    assert commits.groups == 0


@pytest.fixture
def commit_kinds(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each commit of the journal was a durable one (fsynced), in order."""
    kinds: list[bool] = []
    queue_uploads = store.queue_uploads

    def counted(rows: list[Journaled], *, durable: bool = True) -> list[int]:
        kinds.append(durable)
        return queue_uploads(rows, durable=durable)

    monkeypatch.setattr(store, "queue_uploads", counted)
    return kinds


def test_a_row_whose_bytes_are_durable_is_committed_at_once_with_no_fsync(
        store: Store, tmp_path: Path, fsynced: list[str], commit_kinds: list[bool]) -> None:
    """A close fsyncs its file and folder; journaling the same file again with only new
    metadata (a utimens of a pending upload) commits the row at once, outside any
    group, and fsyncs nothing, not even the database."""
    path = written(tmp_path / "cache", "f")
    commits = GroupCommit(store, Threads(4))

    async def main() -> list[int]:
        first = await commits.journal(row(path))
        after_close = list(fsynced)
        touched = Journaled(str(path), "acct", "cont", "f", base_etag="", mtime_ns=7)
        second = await commits.journal(touched, bytes_durable=True)
        assert after_close == ["file", "folder"]
        return [first, second]

    assert trio.run(main) == [1, 2]
    assert fsynced == ["file", "folder"]
    assert commit_kinds == [True, False] and commits.groups == 1
    upload = store.upload(str(path))
    assert upload is not None and (upload.version, upload.mtime_ns) == (2, 7)
    assert not upload.holds_bytes and store.small_copies() == []


def test_a_small_file_is_journaled_with_its_bytes_and_no_fsync(
        store: Store, tmp_path: Path, fsynced: list[str]) -> None:
    """Up to JOURNAL_BYTES_MAX the row holds the bytes, made durable by its commit;
    a touch keeps them; a later version too large for the row fsyncs and drops them,
    and one small again holds its own."""
    path = written(tmp_path / "cache", "f", JOURNAL_BYTES_MAX)
    commits = GroupCommit(store, Threads(4))

    async def journal(bytes_durable: bool = False) -> None:
        await commits.journal(Journaled(str(path), "acct", "cont", "f", base_etag=""),
                              bytes_durable=bytes_durable)

    trio.run(journal)
    assert fsynced == []
    assert store.small_copies() == [(str(path), path.read_bytes())]
    upload = store.upload(str(path))
    assert upload is not None and upload.holds_bytes

    trio.run(partial(journal, True))
    assert fsynced == [] and store.small_copies() == [(str(path), path.read_bytes())]

    path.write_bytes(b"x" * (JOURNAL_BYTES_MAX + 1))
    trio.run(journal)
    assert fsynced == ["file", "folder"] and store.small_copies() == []
    trio.run(partial(journal, True))
    assert store.small_copies() == []

    path.write_bytes(b"small again")
    trio.run(journal)
    assert store.small_copies() == [(str(path), b"small again")]
    upload = store.upload(str(path))
    assert upload is not None and upload.version == 5


def test_new_metadata_behind_a_close_of_the_same_file_commits_after_it(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        commit_kinds: list[bool]) -> None:
    """A chmod while the close of its file still waits for its fsync waits for that
    close to commit, rather than committing first: the row ends with the chmod's
    metadata."""
    path = written(tmp_path / "cache", "f")
    fsyncing, release = threading.Event(), threading.Event()

    def held_fsync(_path: Path) -> None:
        fsyncing.set()
        release.wait(TIMEOUT)

    monkeypatch.setattr(commits_module, "fsync_file", held_fsync)
    monkeypatch.setattr(commits_module, "fsync_folder", lambda folder: None)
    commits = GroupCommit(store, Threads(4))
    closed = Journaled(str(path), "acct", "cont", "f", base_etag="", metadata='{"mode": "1"}')
    chmodded = Journaled(str(path), "acct", "cont", "f", base_etag="", metadata='{"mode": "2"}')

    async def chmod_during_the_fsync() -> None:
        await trio.to_thread.run_sync(fsyncing.wait, TIMEOUT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(commits.journal, chmodded, bytes_durable=True))
            await trio.testing.wait_all_tasks_blocked()  # the chmod waits on the close
            assert commit_kinds == []
            release.set()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commits.journal, closed)
            nursery.start_soon(chmod_during_the_fsync)

    trio.run(main)
    upload = store.upload(str(path))
    assert upload is not None and (upload.version, upload.metadata) == (2, '{"mode": "2"}')
    assert commit_kinds == [True, False]


def test_a_new_folders_marker_is_committed_at_once_holding_its_bytes(
        store: Store, tmp_path: Path, fsynced: list[str], commit_kinds: list[bool]) -> None:
    """An mkdir's marker (an empty file) needs no fsync before mkdir returns, as on a
    local file system: its row is committed at once, outside any group, and holds its
    (empty) bytes, so a mount after a crash that lost the copy makes it again."""
    marker = tmp_path / "folder"
    marker.write_bytes(b"")
    commits = GroupCommit(store, Threads(4))

    async def main() -> int:
        return await commits.journal(row(marker), durable=False)

    assert trio.run(main) == 1
    assert fsynced == [] and commit_kinds == [False] and commits.groups == 0
    assert store.small_copies() == [(str(marker), b"")]
