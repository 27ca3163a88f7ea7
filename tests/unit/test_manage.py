"""`Manager`, the control requests on a live mount's cache (prefetch, cache ls / evict,
stats, hold_async), over the parts of the file-life model and the fake remote, with
no daemon, no socket and no FUSE. The entry is `data`, the container's root."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from blobmount.errors import BlobmountError
from blobmount.eviction import Evictor
from blobmount.manage import Manager

from .test_file_life_model import FileLife, machine


class Requests:
    """The control requests, called in the parts' trio loop as the socket would."""

    def __init__(self, state: FileLife) -> None:
        self.state = state
        self.entries = state.life.entries  # the list Files reads each entry's mode from

        def build() -> Manager:
            evictor = Evictor(state.store, state.cache, self.entries, low_watermark=0.8)
            evictor.protect(state.downloads.in_use)
            evictor.protect(state.life.paths_in_use)
            return Manager(self.entries, state.namespace.remotes, state.store, state.cache,
                           state.downloads, state.uploads, evictor)

        self.manager = state.loop.sync(build)
        self.progress: list[dict[str, Any]] = []

    async def _send(self, update: dict[str, Any]) -> None:
        self.progress.append(update)

    def __call__(self, op: str, **request: Any) -> dict[str, Any]:
        handler = self.manager.handlers()[op]
        return self.state.loop.call(handler, {**request, "progress": self._send})

    def write(self, path: str, data: bytes) -> int:
        """A file made through the mount and closed (in async mode: journaled); its
        handle number is gone, its inode returned."""
        async def make() -> int:
            parent, leaf = await self.state._lookup(path)
            number, node = await self.state.life.create(parent.inode, leaf)
            await self.state.life.write(number, 0, data)
            await self.state.life.flush(number)
            await self.state.life.release(number)
            return node.inode

        return self.state.loop.call(make)

    def downloads(self) -> int:
        return sum(1 for call in self.state.remote.calls if call[0] == "download")


@contextlib.contextmanager
def requests(mode: str = "sync") -> Iterator[Requests]:
    with machine(mode) as state:
        yield Requests(state)


def test_prefetch_brings_a_folder_into_the_cache_once() -> None:
    with requests() as ask:
        for name in ("d/a", "d/b", "e/c"):
            ask.state.remote.put_elsewhere(name, name.encode() * 10)
        done = ask("prefetch", paths=["data/d", "./data/d/"])  # the same folder twice
        assert (done["files"], done["bytes"], done["downloaded"], done["cached"]) == (
            2, 60, 2, 0)
        assert done["failed"] == [] and done["over_limit"] == []
        assert ask.progress[-1] == {"files_done": 2, "files_total": 2, "bytes_done": 60,
                                    "bytes_total": 60}
        assert ask.downloads() == 2
        again = ask("prefetch", paths=["data"])  # the whole entry: only e/c is new
        assert (again["files"], again["downloaded"], again["cached"]) == (3, 1, 2)
        assert ask.downloads() == 3


def test_prefetch_says_which_paths_failed_and_why() -> None:
    with requests() as ask:
        ask.state.remote.put_elsewhere("d/a", b"a")
        done = ask("prefetch", paths=["data/d/a", "data/missing", "elsewhere"])
        assert done["downloaded"] == 1
        failed = {item["path"]: item["error"] for item in done["failed"]}
        assert set(failed) == {"data/missing", "elsewhere"}
        assert "no such file or folder" in failed["data/missing"]
        assert "not in any mount entry" in failed["elsewhere"]


def test_cache_ls_names_each_copy_s_state() -> None:
    with requests("async") as ask:
        ask.state.remote.put_elsewhere("read", b"in the container")
        ask("prefetch", paths=["data/read"])
        ask.write("written", b"journaled, not uploaded")

        async def open_for_writing() -> int:
            parent, _ = await ask.state._lookup("open")
            number, _ = await ask.state.life.create(parent.inode, "open")
            await ask.state.life.write(number, 0, b"being written")
            return number

        ask.state.loop.call(open_for_writing)
        listed = {item["path"]: item for item in ask("cache_ls", path="data")["files"]}
        assert {path: item["state"] for path, item in listed.items()} == {
            "data/read": "clean", "data/written": "pending", "data/open": "dirty"}
        assert listed["data/read"]["size"] == len(b"in the container")
        assert list(listed) == sorted(listed)
        assert [item["path"] for item in ask("cache_ls", path="data/read")["files"]] == [
            "data/read"]


def test_evict_drops_clean_copies_and_keeps_what_is_not_uploaded() -> None:
    with requests("async") as ask:
        ask.state.remote.put_elsewhere("read", b"0123456789")
        ask("prefetch", paths=["data/read"])
        ask.write("written", b"journaled")
        kept = ask("cache_evict", paths=["data"])
        assert kept["evicted"] == [{"path": "data/read", "size": 10}] and kept["bytes"] == 10
        assert kept["refused"] == [{"path": "data/written", "reason":
                                    "not uploaded yet (use --force to upload it first)"}]
        assert "written" not in ask.state.remote.files()
        assert [item["path"] for item in ask("cache_ls", path="")["files"]] == ["data/written"]
        forced = ask("cache_evict", paths=["data/written"], force=True)
        assert forced["evicted"] == [{"path": "data/written", "size": 9}]
        assert ask.state.remote.files()["written"].data == b"journaled"
        assert ask("cache_ls", path="data")["files"] == []
        # Dropped, not lost: the next read downloads it again.
        before = ask.downloads()
        ask("prefetch", paths=["data/read"])
        assert ask.downloads() == before + 1


def test_stats_count_the_container_the_cache_and_the_journal() -> None:
    with requests("async") as ask:
        ask.state.remote.put_elsewhere("d/a", b"12345")
        ask.state.remote.put_elsewhere("d/b", b"123")
        ask("prefetch", paths=["data/d/a"])
        ask.write("d/new", b"1234567")
        (row,) = ask("stats", path="data/d")["entries"]
        assert (row["path"], row["container"]) == ("data/d", "acct/cont/d")
        assert (row["files"], row["bytes"]) == (2, 8)  # d/new is not in the container yet
        assert (row["cached_files"], row["cached_bytes"], row["pending_uploads"]) == (2, 12, 1)
        snapshot = ask.state.loop.sync(ask.manager.snapshot)
        assert snapshot.uploads_pending == {"data": 1}
        assert snapshot.cache_bytes["data"] == 12
        status = ask.state.loop.sync(ask.manager.status)
        assert status["cache"][0]["local"] == "data" and status["async_holds"] == 0


def test_hold_async_switches_writable_entries_while_held() -> None:
    with requests("sync") as ask:
        seen: list[tuple[dict[str, Any], str]] = []

        async def hold() -> tuple[str, str]:
            async def progress(update: dict[str, Any]) -> None:
                seen.append((update, ask.entries[0].upload))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask.manager.hold_async, {"progress": progress})
                await trio.testing.wait_all_tasks_blocked()
                during = ask.entries[0].upload
                nursery.cancel_scope.cancel()  # the client goes away
            return during, ask.entries[0].upload

        assert ask.state.loop.call(hold) == ("async", "sync")
        assert seen == [({"async_holds": 1}, "async")]
        # While held, a close journals instead of uploading.
        del seen[:]

        async def write_while_held() -> bool:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask.manager.hold_async, {"progress": ask._send})
                await trio.testing.wait_all_tasks_blocked()
                parent, _ = await ask.state._lookup("x")
                number, _ = await ask.state.life.create(parent.inode, "x")
                await ask.state.life.write(number, 0, b"later")
                await ask.state.life.flush(number)
                await ask.state.life.release(number)
                uploaded = "x" in ask.state.remote.files()
                nursery.cancel_scope.cancel()
            return uploaded

        assert ask.state.loop.call(write_while_held) is False
        ask.state.loop.call(ask.state._sync)
        assert ask.state.remote.files()["x"].data == b"later"


def test_requests_with_bad_paths_are_refused_in_one_line() -> None:
    with requests() as ask:
        for op, request in (("prefetch", {"paths": "data"}), ("cache_evict", {"paths": [1]})):
            with pytest.raises(BlobmountError, match="give a list of paths"):
                ask(op, **request)
        with pytest.raises(BlobmountError, match="not in any mount entry"):
            ask("stats", path="elsewhere")
