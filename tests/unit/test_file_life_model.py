"""A stateful property test of a file's life (`Files`), on a fake remote.

Hypothesis interleaves opens, writes, fsyncs, closes, truncates, renames (of files,
onto files, of folders), unlinks (also of open files), uploads finishing, a download
held in flight, and the container changing behind the mount's back, over the real
Files, Namespace, Cache, Downloads, Uploads and Store (sqlite in a temporary folder).
The upload worker is not started: journaled uploads go up when a rule says so.
Everything runs in one trio loop in a thread of its own; each rule calls into it.

The model is small: per file, its bytes as the mount's writers made them, whether it
holds a change the container lacks, and whether the container's blob was changed
elsewhere since that change began (then, and only then, a conflict copy is right).
What is checked:
- every upload puts bytes the file really held, never over a blob changed elsewhere
  since the change began, never for a file no longer there;
- a conflict copy holds the file's bytes, and only when the blob really changed;
- a read returns a version the file had; an open for reading sees the latest bytes
  (the local change, else the container's blob: the listing TTL is 0);
- with nothing open and every upload done, the container holds every file's last
  bytes under its current name, nothing dirty or journaled is left, and no blob the
  mount put is left under a name no file has;
- closes, fsyncs and writes always succeed (the fake remote never fails).

Two states the first version of this test had to keep out of its runs, because the
code lost bytes there, are now in them, each also with a test of its own at the end:
- a conflict found while the file stays open for writing (sync mode's fsync, a
  truncate, a sync or a rename uploading it): the writer's handles go on as the
  conflict copy, a file of its own, and what they write later goes up there too;
- renaming a file with a local change (or its folder) whose blob was deleted
  elsewhere: the bytes are here, so it is renamed here and goes up under the new name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from blobmount import uploads as uploads_module
from blobmount.azure import AsyncContainer
from blobmount.cache import Cache
from blobmount.config import Account, MountEntry, Settings
from blobmount.errors import BlobmountError
from blobmount.files import Files, Writing
from blobmount.namespace import Namespace, NotFound
from blobmount.posix import Kept
from blobmount.store import ROOT_INODE, Node, Store
from blobmount.threads import Threads
from blobmount.transfers import Downloads
from blobmount.uploads import Uploads

from .fakeremote import FakeRemote, face

FOLDERS = ("d", "e")
LEAVES = ("x", "y")
#: every file path the machine uses, relative to the entry's folder
PATHS = tuple([*LEAVES, *(f"{folder}/{leaf}" for folder in FOLDERS for leaf in LEAVES)])
#: a call into the loop that takes longer than this has hung (a deadlock): fail, do
#: not wait forever. No step is expected to come anywhere near it.
HANG = 60.0
REAL_CONFLICT_NAME = uploads_module.conflict_name
#: the temporary file of a save by rename, beside the file it replaces
TEMPORARY = "x.part"


def distinct_conflict_names() -> Callable[..., str]:
    """conflict_name on a clock that moves a second per conflict: two conflicts of
    one file within a second would get one name (see the note of branch
    filelife-model), which this test is not about."""
    seconds = itertools.count()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return lambda blob, when=None: REAL_CONFLICT_NAME(
        blob, start + dt.timedelta(seconds=next(seconds)))


class Loop:
    """One trio run in a thread of its own; `call` runs a coroutine in it and waits."""

    def __init__(self) -> None:
        ready = threading.Event()
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self._thread.start()
        ready.wait()

    def call(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async def bounded() -> Any:
            with trio.fail_after(HANG):
                return await function(*args)

        return trio.from_thread.run(bounded, trio_token=self.token)

    def sync(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a plain function in the loop's thread (sqlite's connection lives there)."""
        return trio.from_thread.run_sync(function, *args, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join()


class HeldDownloads(Downloads):
    """Downloads, where a step that waits for a download of a file (a writer's open,
    a rename settling it) first lets the test's held download go on: the held one
    stands for a download that finishes whenever the code under test waits for it."""

    remote: FakeRemote

    async def settle(self, path: Path) -> None:
        if self._flights.running(path):
            self.remote.release_all()  # the step waits for the held download
        await super().settle(path)

    async def cached_copy(self, entry: MountEntry, remote: AsyncContainer, blob: str,
                          **wanted: Any) -> tuple[Path, bool]:
        if self._flights.running(self.cache.path_for(entry, blob)):
            self.remote.release_all()  # this open would wait for the held download
        return await super().cached_copy(entry, remote, blob, **wanted)


@dataclass
class File:
    """The model of one file (one inode) of the mount."""

    number: int
    name: str | None            # its path under the entry; None once unlinked or replaced
    content: bytes = b""        # its bytes while `changed`
    changed: bool = False       # holds a change the container may lack
    uploaded: bytes | None = None  # the bytes the container holds of this change
    conflict: bool = False      # the blob was changed elsewhere since the change began
    vanished: bool = False      # the blob was deleted elsewhere since the change began
    gone_elsewhere: bool = False  # deleted elsewhere with no change here: listings drop it
    #: never uploaded, but renamed here over a file the container held: its change is
    #: based on that version, so it is no longer a file only here
    replaced_one: bool = False
    versions: set[bytes] = field(default_factory=set)  # every version it had


@dataclass
class ModelHandle:
    file: File
    writing: bool
    written: bool = False       # changed since its last flush or fsync
    late: bool = False          # its open ended after an unlink of the file: see the note


class FileLife(RuleBasedStateMachine):
    """Files over a fake container, against a model of what must be."""

    def __init__(self) -> None:
        super().__init__()
        # On tmpfs where there is one: the journal's many fsyncs cost nothing there.
        shm = Path("/dev/shm")
        self.folder = Path(tempfile.mkdtemp(prefix="filelife-",
                                            dir=shm if shm.is_dir() else None))
        self.loop = Loop()
        self.remote = FakeRemote()
        self.remote.on_put = self._put
        self.ready = False
        self.files: list[File] = []
        self.handles: dict[int, ModelHandle] = {}
        self.folders: set[str] = set()
        self.problems: list[str] = []
        self._stamps = itertools.count(1)
        self.held: dict[str, Any] | None = None
        #: files a conflict copy was made of in the step under way
        self.conflicted_now: set[int] = set()
        #: during a rename: the new names of the files it moves (it may upload them there)
        self.moving: dict[str, File] = {}
        uploads_module.conflict_name = distinct_conflict_names()

    # -- set-up -----------------------------------------------------------------------

    @initialize(mode=st.sampled_from(["sync", "async"]),
                seeds=st.sets(st.sampled_from(["x", "y", "d/x"])), folder=st.booleans())
    def start(self, mode: str, seeds: set[str] = frozenset(), folder: bool = False) -> None:
        """Both upload modes; blobs already in the container, and a folder, or not."""
        account = Account(name="acct", account_name="acct",
                          endpoint="https://acct.blob.core.windows.net", account_key="a2V5")
        self.entry = MountEntry(local="data", account=account, container="cont", prefix="",
                                cache_dir=self.folder / "cache", upload=mode)
        self.mode = mode
        self.loop.sync(self._build)
        self.ready = True
        if folder or any("/" in seed for seed in seeds):
            self.loop.call(self._mkdir, "d")
            self.folders.add("d")
        for seed in sorted(seeds):
            self.remote.put_elsewhere(seed, b"seed" + self._data())

    def _build(self) -> None:
        """The parts, wired as daemon._assemble wires them (less eviction and FUSE)."""
        threads = Threads(8)
        entries, remotes = [self.entry], [face(self.remote, threads)]
        self.store = Store(self.folder / "meta" / "blobmount.sqlite")
        self.cache = Cache(self.store)
        self.downloads = HeldDownloads(self.cache, None, sdk_max=1 << 40)
        self.downloads.remote = self.remote
        # TTL 0: every lookup lists again and every open asks for the blob's ETag, so
        # the model knows what an open must see.
        self.namespace = Namespace(self.store, entries, remotes, ttl=0.0)
        self.namespace.build_mount_table()
        self.uploads = Uploads(
            self.store, self.cache, entries, remotes, None, settings=Settings(),
            threads=threads,
            on_uploaded=lambda target, blob, *done: self.namespace.uploaded(
                target.index, blob, *done),
            on_conflict=lambda target, blob: self.namespace.conflicted(target.index, blob))
        self.life = Files(self.namespace, self.cache, self.downloads, self.uploads, entries)
        self.life.recover()

    def teardown(self) -> None:
        try:
            if self.ready and not self.problems:
                self._finish()
        finally:
            self.close_down()

    def close_down(self) -> None:
        """Stop the loop and remove the files, checking nothing."""
        self.remote.release_all()
        if self.ready:
            self.loop.sync(self.store.close)
        self.loop.close()
        uploads_module.conflict_name = REAL_CONFLICT_NAME
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------

    def _data(self) -> bytes:
        """Bytes no write made before: each version of a file can be told apart."""
        return f"<{next(self._stamps)}>".encode()

    def _file_at(self, path: str) -> File | None:
        return next((file for file in self.files if file.name == path), None)

    def _visible(self, path: str) -> bool:
        """Whether the mount shows a file at `path` (TTL 0: as the container says,
        unless a change of ours is there)."""
        file = self._file_at(path)
        if file is not None and file.changed:
            return True
        return path in self.remote.files()

    def _places(self) -> list[str]:
        """The paths whose folder exists."""
        return [path for path in PATHS if self._folder_exists(path)]

    def _shown_paths(self) -> list[str]:
        return [path for path in self._places() if self._visible(path)]

    def _folder_of(self, path: str) -> str:
        return path.rpartition("/")[0]

    def _folder_exists(self, path: str) -> bool:
        folder = self._folder_of(path)
        return folder == "" or folder in self.folders

    def _shown(self, path: str) -> File:
        """The model file the mount shows at `path`."""
        file = self._file_at(path)
        if file is None:
            file = File(len(self.files), path)
            self.files.append(file)
        if not file.changed:
            file.versions.add(self.remote.files()[path].data)
        return file

    def _expected(self, file: File) -> bytes:
        """What an open for reading must see now."""
        if file.changed:
            return file.content
        return self.remote.files()[file.name].data

    def _writers(self, file: File) -> int:
        return sum(1 for handle in self.handles.values()
                   if handle.writing and handle.file is file)

    def _settle_model(self) -> None:
        """A change whose last bytes are in the container, with no writer left and no
        upload of it journaled (a close may journal bytes that went up already), is over."""
        for file in self.files:
            if (file.changed and not self._writers(file) and file.uploaded == file.content
                    and not self._journaled(file)):
                file.changed = False
                if file.vanished:
                    # Deleted elsewhere, and nothing written here since: nothing made
                    # it again, so the next listing drops it.
                    file.name, file.gone_elsewhere = None, True

    def _journaled(self, file: File) -> bool:
        path = str(self.cache.path_for(self.entry, file.name or ""))
        return file.name is not None and self.loop.sync(lambda: self.store.upload(path)) is not None

    def _put(self, blob: str, data: bytes) -> None:
        """An upload by the mount is landing (called from the upload's thread)."""
        if blob in FOLDERS:
            return  # a folder's marker (a mkdir with `upload: async`): checked at sync
        if ".conflict-" in blob and self._file_at(blob) is None:
            name = blob.partition(".conflict-")[0]  # the names here have no extension
            file = self._file_at(name)
            if file is None or not file.conflict:
                self.problems.append(f"conflict copy {blob} of {name}, whose blob was not"
                                     " changed elsewhere")
                return
            if data not in file.versions:
                self.problems.append(f"conflict copy {blob} holds bytes {name} never had")
            # The change is kept beside the blob; the file shows the container's again.
            self.conflicted_now.add(file.number)
            if self._writers(file):
                # Still open for writing: its handles go on as the copy, a file of its own.
                copy = File(len(self.files), blob, file.content, changed=True,
                            uploaded=data, versions=set(file.versions))
                self.files.append(copy)
                for handle in self.handles.values():
                    if handle.file is file:
                        handle.file = copy
                if self.held is not None and self.held["file"] is file:
                    # A reader whose open is in flight or not yet collected opened the
                    # same file, so it follows too.
                    self.held["file"] = copy
            file.conflict = False
            file.uploaded = None
            file.changed = False
            return
        file = self.moving.get(blob) or self._file_at(blob)
        current = self.remote.files().get(blob)
        if file is not None and not file.changed and current is not None and current.data == data:
            return  # a commit of bytes the container already holds (say, truncate to size)
        if file is None or not file.changed:
            self.problems.append(f"upload to {blob}, which no file with a change has")
            return
        if data not in file.versions:
            self.problems.append(f"upload to {blob} of bytes it never had: {data!r}")
        if file.conflict:
            self.problems.append(f"upload over {blob}, which was changed elsewhere")
        file.uploaded = data
        file.conflict = file.vanished = False

    def _check(self) -> None:
        assert not self.problems, self.problems

    # -- trio-side steps --------------------------------------------------------------

    async def _lookup(self, path: str) -> tuple[Node, str]:
        """The parent folder's node and the leaf name of `path`."""
        parent = await self.namespace.lookup(self.namespace.node(ROOT_INODE), "data")
        *folders, leaf = path.split("/")
        for folder in folders:
            parent = await self.namespace.lookup(parent, folder)
        return parent, leaf

    async def _open(self, path: str, flags: int) -> int:
        parent, leaf = await self._lookup(path)
        node = await self.namespace.lookup(parent, leaf)
        number, _ = await self.life.open(node.inode, flags)
        return number

    async def _create(self, path: str) -> int:
        parent, leaf = await self._lookup(path)
        number, _ = await self.life.create(parent.inode, leaf)
        return number

    async def _close(self, number: int) -> None:
        # As the kernel does: flush, then release.
        await self.life.flush(number)
        await self.life.release(number)

    async def _unlink(self, path: str) -> None:
        parent, leaf = await self._lookup(path)
        await self.life.unlink(parent, leaf)

    async def _rename(self, source: str, target: str) -> None:
        old_parent, old_leaf = await self._lookup(source)
        new_parent, new_leaf = await self._lookup(target)
        # As the kernel does: it looks the target name up first.
        with contextlib.suppress(NotFound):
            await self.namespace.lookup(new_parent, new_leaf)
        await self.life.rename(old_parent, old_leaf, new_parent, new_leaf, replace=True)

    async def _truncate(self, path: str, size: int) -> None:
        parent, leaf = await self._lookup(path)
        await self.life.truncate(await self.namespace.lookup(parent, leaf), size, None)

    async def _mkdir(self, folder: str) -> None:
        parent, _ = await self._lookup("x")
        await self.life.make_folder(parent, folder, Kept())  # async: its marker journaled

    async def _sync(self) -> list:
        return await self.uploads.sync()

    def _absent(self, call: Callable[[], Any]) -> None:
        """`call` must fail as a missing name does (ENOENT)."""
        try:
            call()
        except BlobmountError as exc:
            assert exc.errno == errno.ENOENT, exc
        else:
            raise AssertionError("a name the container does not have was found")

    # -- rules: opening and closing ----------------------------------------------------

    @precondition(lambda self: self.ready and len(self._shown_paths()) < len(self._places()))
    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        self._do_create(data.draw(st.sampled_from(
            [p for p in self._places() if not self._visible(p)]), label="path"))

    def _do_create(self, path: str) -> int:
        number = self.loop.call(self._create, path)
        old = self._file_at(path)
        if old is not None:
            old.name = None  # a vanished blob's file: the new one is another
        file = File(len(self.files), path, b"", changed=True, versions={b""})
        self.files.append(file)
        self.handles[number] = ModelHandle(file, writing=True, written=True)
        return number

    @precondition(lambda self: self.ready and self._shown_paths())
    @rule(data=st.data(), truncate=st.booleans())
    def open_for_writing(self, data: st.DataObject, truncate: bool) -> None:
        path = data.draw(st.sampled_from(self._shown_paths()), label="path")
        flags = os.O_RDWR | (os.O_TRUNC if truncate else 0)
        file = self._shown(path)
        if truncate:
            file.versions.add(b"")
        number = self.loop.call(self._open, path, flags)
        if not file.changed:
            base = self.remote.files()[path].data
            file.content, file.uploaded, file.changed, file.conflict = base, base, True, False
        if truncate:
            file.content = b""
        self.handles[number] = ModelHandle(file, writing=True, written=truncate)

    @precondition(lambda self: self.ready and self._shown_paths())
    @rule(data=st.data())
    def open_for_reading(self, data: st.DataObject) -> None:
        self._do_open_for_reading(data.draw(st.sampled_from(self._shown_paths()),
                                            label="path"))

    def _do_open_for_reading(self, path: str) -> None:
        file = self._shown(path)
        number = self.loop.call(self._open, path, os.O_RDONLY)
        self.handles[number] = ModelHandle(file, writing=False)
        got = self.loop.call(self.life.read, number, 0, 1 << 20)
        assert got == self._expected(file), (path, got, self._expected(file))

    @precondition(lambda self: self.ready and len(self._shown_paths()) < len(self._places()))
    @rule(data=st.data(), writing=st.booleans())
    def open_missing(self, data: st.DataObject, writing: bool) -> None:
        """A name the mount must not show (unlinked, renamed away, gone elsewhere)."""
        path = data.draw(st.sampled_from(
            [p for p in self._places() if not self._visible(p)]), label="path")
        flags = os.O_RDWR if writing else os.O_RDONLY
        self._absent(lambda: self.loop.call(self._open, path, flags))

    @precondition(lambda self: self.ready and self.held is None and self._shown_paths())
    @rule(data=st.data())
    def open_for_reading_held(self, data: st.DataObject) -> None:
        """A reader opens and its download (if one is needed) stays in flight."""
        self._start_held(data.draw(st.sampled_from(self._shown_paths()), label="path"))

    def _start_held(self, path: str) -> None:
        file = self._shown(path)
        blob = path
        held: dict[str, Any] = {"file": file, "blob": blob}

        async def start() -> None:
            entered = trio.Event()
            done = trio.Event()
            token = trio.lowlevel.current_trio_token()
            held["hold"] = self.remote.hold(blob, lambda: token.run_sync_soon(entered.set))

            async def reader() -> None:
                try:
                    held["number"] = await self._open(path, os.O_RDONLY)
                except BaseException as exc:  # reported by the step that collects it
                    held["error"] = exc
                finally:
                    done.set()
                    entered.set()

            self.loop.nursery.start_soon(reader)
            await entered.wait()
            held["done"] = done
            if done.is_set():
                self.remote.unhold(blob)

        self.loop.call(start)
        data = held["hold"].data
        if data is not None:
            file.versions.add(data)
        self.held = held
        self._collect_held()

    def _collect_held(self) -> None:
        held = self.held
        if held is None or not held["done"].is_set():
            return
        self.held = None
        file = held["file"]
        if getattr(held.get("error"), "errno", None) == errno.ENOENT and file.name is None:
            return  # unlinked or deleted while the open waited: the open came after
        if "error" in held:
            raise held["error"]
        self.handles[held["number"]] = ModelHandle(file, writing=False, late=file.name is None)
        self._read(held["number"])

    @precondition(lambda self: self.held is not None)
    @rule()
    def download_lands(self) -> None:
        self.remote.release_all()
        self.loop.call(self.held["done"].wait)
        self._collect_held()

    @precondition(lambda self: self.ready and self.held is None and self._shown_paths())
    @rule(data=st.data())
    def save_by_rename(self, data: st.DataObject) -> None:
        """An editor's save while another program reads the file: write a temporary
        file, close it, rename it over the file, while the reader's download of the
        old bytes is still in flight; then the download lands."""
        path = data.draw(st.sampled_from(self._shown_paths()), label="path")
        temporary = f"{self._folder_of(path)}/{TEMPORARY}".lstrip("/")
        self._start_held(path)
        number = self._do_create(temporary)
        self._do_write(number, "start")
        self._do_close(number)
        self._do_rename(temporary, path)
        if self.held is not None:
            self.download_lands()

    @precondition(lambda self: self.ready and self.held is None and self._shown_paths())
    @rule(data=st.data())
    def reopen_while_downloading(self, data: st.DataObject) -> None:
        """A reader's download is in flight when the blob changes elsewhere and another
        reader opens the file: the second must see the new version, not the bytes the
        first download brings."""
        path = data.draw(st.sampled_from(self._shown_paths()), label="path")
        self._start_held(path)
        if self.held is not None:
            self._change_elsewhere(path)
        self._do_open_for_reading(path)
        if self.held is not None:
            self.download_lands()

    @precondition(lambda self: any(h.writing for h in self.handles.values()))
    @rule(data=st.data(), size=st.sampled_from([0, 3, 50]))
    def ftruncate(self, data: st.DataObject, size: int) -> None:
        """ftruncate(2) through an open writer: as fs.setattr does it, by inode."""
        number = data.draw(st.sampled_from(
            sorted(n for n, h in self.handles.items() if h.writing)))
        handle = self.handles[number]
        file = handle.file
        inode = self.life.handles[number].inode

        async def ftruncate() -> None:
            await self.life.truncate(self.namespace.node(inode), size, number)

        file.content = file.content[:size].ljust(size, b"\0")
        file.versions.add(file.content)
        self.loop.call(ftruncate)
        file.changed = True
        handle.written = True

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        self._read(data.draw(st.sampled_from(sorted(self.handles))))

    def _read(self, number: int) -> None:
        file = self.handles[number].file
        got = self.loop.call(self.life.read, number, 0, 1 << 20)
        if file.gone_elsewhere:
            return  # a new file of its name may reuse its cache file in place: see the note
        assert got in file.versions, (file.name, got, file.versions)

    @precondition(lambda self: any(h.writing for h in self.handles.values()))
    @rule(data=st.data(), where=st.sampled_from(["start", "middle", "end", "past"]))
    def write(self, data: st.DataObject, where: str) -> None:
        self._do_write(data.draw(st.sampled_from(
            sorted(n for n, h in self.handles.items() if h.writing))), where)

    def _do_write(self, number: int, where: str) -> None:
        handle = self.handles[number]
        file = handle.file
        end = len(file.content)
        offset = {"start": 0, "middle": end // 2, "end": end, "past": end + 3}[where]
        chunk = self._data()
        written = self.loop.call(self.life.write, number, offset, chunk)
        assert written == len(chunk)
        content = file.content.ljust(offset, b"\0")
        file.content = content[:offset] + chunk + content[offset + len(chunk):]
        file.versions.add(file.content)
        file.changed = True
        handle.written = True

    @precondition(lambda self: any(h.writing for h in self.handles.values()))
    @rule(data=st.data())
    def fsync(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(
            sorted(n for n, h in self.handles.items() if h.writing)))
        handle = self.handles[number]
        # fsync(2) covers what every descriptor of the file wrote.
        handle.written = any(other.written for other in self.handles.values()
                             if other.writing and other.file is handle.file)
        self.loop.call(self.life.fsync, number)
        self._committed(handle)
        for other in self.handles.values():
            if other.writing and other.file is handle.file:
                other.written = False

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        self._do_close(data.draw(st.sampled_from(sorted(self.handles))))

    def _do_close(self, number: int) -> None:
        handle = self.handles[number]
        self.loop.call(self._close, number)
        del self.handles[number]
        if handle.writing:
            self._committed(handle)
        self._settle_model()

    def _committed(self, handle: ModelHandle) -> None:
        """A close or fsync returned: in sync mode, the bytes are in the container (or,
        after a real conflict, beside it)."""
        file = handle.file
        if (self.mode == "sync" and handle.written and file.name is not None
                and file.number not in self.conflicted_now):
            assert file.uploaded == file.content, (
                f"{file.name}: fsync or close returned before its bytes were uploaded")
        self.conflicted_now.discard(file.number)

    @precondition(lambda self: self.ready and self._shown_paths())
    @rule(data=st.data(), size=st.sampled_from([0, 2, 100]))
    def truncate(self, data: st.DataObject, size: int) -> None:
        """truncate(2) by name, with no handle: its own commit."""
        path = data.draw(st.sampled_from(self._shown_paths()), label="path")
        file = self._shown(path)
        if not file.changed:
            base = self.remote.files()[path].data
            file.content, file.uploaded, file.conflict = base, base, False
        file.changed = True
        file.content = file.content[:size].ljust(size, b"\0")
        file.versions.add(file.content)
        self.loop.call(self._truncate, path, size)
        if self.mode == "sync" and file.number not in self.conflicted_now:
            assert file.uploaded == file.content, f"{path}: truncate returned before upload"
        self.conflicted_now.discard(file.number)
        self._settle_model()

    # -- rules: names -----------------------------------------------------------------

    @precondition(lambda self: self.ready and self._shown_paths())
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(self._shown_paths()), label="path")
        self.loop.call(self._unlink, path)
        file = self._file_at(path)
        if file is not None:
            file.name = None
        assert path not in self.remote.files(), f"{path} is still in the container"

    @precondition(lambda self: self.ready and self._shown_paths())
    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        """A file onto a new name, or onto another file."""
        source = data.draw(st.sampled_from(self._shown_paths()), label="source")
        target = data.draw(st.sampled_from([p for p in self._places() if p != source]),
                           label="target")
        self._do_rename(source, target)

    def _do_rename(self, source: str, target: str) -> None:
        moved = self._shown(source)
        replaced = self._shown(target) if self._visible(target) else self._file_at(target)
        here_only = (self.mode == "async" and moved.changed and moved.uploaded is None
                     and not moved.replaced_one)
        if here_only:
            moved.conflict = False  # it goes up as a new blob of the new name, not over x
        self.moving = {target: moved}
        try:
            self.loop.call(self._rename, source, target)
        finally:
            self.moving = {}
        if replaced is not None:
            replaced.name = None
            if here_only and (not replaced.changed or replaced.uploaded is not None
                              or replaced.replaced_one):
                # Renamed here alone, it goes up as a change of the version the file it
                # replaced was based on; a later rename uploads it first.
                moved.replaced_one = True
            if here_only and replaced.changed and replaced.conflict:
                # That blob was changed elsewhere since.
                moved.conflict = True
        moved.name = target
        self._moved_writers_committed([moved])
        self._settle_model()

    def _moved_writers_committed(self, moved: list[File]) -> None:
        """A rename commits what the moved files' writers wrote (it uploads, or moves
        the journal row): their next close has nothing of its own to put."""
        for handle in self.handles.values():
            if handle.writing and handle.file in moved:
                handle.written = False

    @precondition(lambda self: self.ready and len(self.folders) < len(FOLDERS))
    @rule(data=st.data())
    def mkdir(self, data: st.DataObject) -> None:
        folder = data.draw(st.sampled_from([f for f in FOLDERS if f not in self.folders]),
                           label="folder")
        self.loop.call(self._mkdir, folder)
        self.folders.add(folder)

    @precondition(lambda self: self.ready and len(self.folders) == 1)
    @rule()
    def rename_folder(self) -> None:
        """The folder, with its files (open or not), onto the other folder name."""
        (source,) = self.folders
        (target,) = set(FOLDERS) - self.folders
        self.moving = {f"{target}/{file.name[len(source) + 1:]}": file for file in self.files
                       if file.name is not None and file.name.startswith(f"{source}/")}
        moved = list(self.moving.values())
        try:
            self.loop.call(self._rename, source, target)
        finally:
            self.moving = {}
        self.folders.remove(source)
        self.folders.add(target)
        self._moved_writers_committed(moved)
        for file in self.files:
            if file.name is not None and file.name.startswith(f"{source}/"):
                file.name = f"{target}/{file.name[len(source) + 1:]}"
        self._settle_model()

    # -- rules: uploads and the container ----------------------------------------------

    @precondition(lambda self: self.ready)
    @rule()
    def uploads_finish(self) -> None:
        failed = self.loop.call(self._sync)
        assert not failed, failed
        # Every folder made (async: its marker journaled) is in the container now, and
        # none that was renamed away.
        with self.remote._lock:
            markers = {name for name, blob in self.remote.blobs.items()
                       if blob.is_folder_marker}
        assert markers == self.folders, (markers, self.folders)
        self._settle_model()

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def blob_changes_elsewhere(self, data: st.DataObject) -> None:
        """Another host writes the blob (or makes it)."""
        self._change_elsewhere(data.draw(st.sampled_from(self._places()), label="path"))

    def _change_elsewhere(self, path: str) -> None:
        file = self._file_at(path)
        if file is not None and file.changed:
            file.conflict = True
        data = b"elsewhere" + self._data()
        self.remote.put_elsewhere(path, data)
        if file is not None and not file.changed and self.held is not None and (
                self.held["file"] is file and not self.held["done"].is_set()):
            file.versions.add(data)  # an open still under way may see the new version

    @precondition(lambda self: self.ready and set(self.remote.files()) & set(PATHS))
    @rule(data=st.data())
    def blob_vanishes_elsewhere(self, data: st.DataObject) -> None:
        """Another host deletes the blob."""
        path = data.draw(st.sampled_from(sorted(set(self.remote.files()) & set(PATHS))),
                         label="path")
        self.remote.delete_elsewhere(path)
        file = self._file_at(path)
        if file is None:
            return
        if file.changed:
            file.conflict = False  # nothing left to conflict with: a write re-creates it
            file.vanished = True
        else:
            file.name = None
            file.gone_elsewhere = True

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def no_problem_seen(self) -> None:
        self._check()

    def _store_now(self) -> tuple[dict[int, Node | None], set[str], list]:
        """What the store holds (one call into the loop: its sqlite lives there)."""
        def read() -> tuple[dict[int, Node | None], set[str], list]:
            nodes = {number: self.store.node(handle.inode)
                     for number, handle in self.life.handles.items()}
            return nodes, self.store.upload_paths(), self.store.cached_files()
        return self.loop.sync(read)

    @invariant()
    def store_agrees(self) -> None:
        """Every open file has a node the kernel's fstat can reach, unlinked or not (one
        deleted elsewhere is dropped by the next listing: see the note), a writer's
        with its size; and a dirty copy has an open writer or a journal row."""
        if not self.ready:
            return
        nodes, journaled, records = self._store_now()
        for number, handle in list(self.life.handles.items()):
            model = self.handles.get(number)
            if model is None or model.late or model.file.gone_elsewhere:
                continue
            node = nodes.get(number)
            assert node is not None, (
                f"handle {number}: its inode {handle.inode} is gone while it is open")
            if isinstance(handle, Writing):
                content = self.handles[number].file.content
                assert node.size == len(content), (
                    f"handle {number}: fstat shows {node.size} bytes, the file has"
                    f" {len(content)}")
        writing = {str(h.path) for h in self.life.handles.values() if isinstance(h, Writing)}
        for record in records:
            if record.state == "dirty":
                assert record.path in writing or record.path in journaled, record

    # -- the end ----------------------------------------------------------------------

    def _finish(self) -> None:
        """Close everything, upload everything: then all must be in the container."""
        if self.held is not None:
            self.download_lands()
        for number in sorted(self.handles):
            handle = self.handles.pop(number)
            self.loop.call(self._close, number)
            if handle.writing:
                self._committed(handle)
        failed = self.loop.call(self._sync)
        assert not failed, failed
        self._settle_model()
        self._check()
        blobs = self.remote.files()
        for file in self.files:
            if file.name is None:
                continue
            assert not file.changed, (
                f"{file.name}: its last bytes {file.content!r} never reached the container"
                f" (it holds {blobs[file.name].data if file.name in blobs else None!r})")
        names = {file.name for file in self.files}
        for name, blob in blobs.items():
            if blob.origin == "mount" and ".conflict-" not in name:
                assert name in names, f"{name} was put by the mount, but no file has it"
        for file in self.files:
            if file.name is not None and file.name in blobs:
                got = self.loop.call(self._read_whole, file.name)
                assert got == blobs[file.name].data, (file.name, got)
        assert not self.loop.sync(self.store.uploads)
        dirty = [r for r in self.loop.sync(self.store.cached_files) if r.state == "dirty"]
        assert not dirty, dirty

    async def _read_whole(self, path: str) -> bytes:
        number = await self._open(path, os.O_RDONLY)
        try:
            return await self.life.read(number, 0, 1 << 20)
        finally:
            await self.life.release(number)


# The suite runs the same 200 examples every time. To look further, run
# `BLOBMOUNT_MODEL_EXAMPLES=400 pytest tests/unit/test_file_life_model.py --hypothesis-seed=N`.
EXPLORE = os.environ.get("BLOBMOUNT_MODEL_EXAMPLES")
FileLife.TestCase.settings = settings(
    max_examples=int(EXPLORE or 200), stateful_step_count=30, deadline=None,
    derandomize=not EXPLORE, database=None, suppress_health_check=[HealthCheck.too_slow])
test_file_life = FileLife.TestCase


# -- the states the first version kept out of its runs, each as it failed then ------


@contextlib.contextmanager
def machine(mode: str, **start: Any) -> Iterator[FileLife]:
    state = FileLife()
    try:
        state.start(mode=mode, **start)
        yield state
    finally:
        state.close_down()


class Draws:
    """A rule's `data` whose draws are given: the rules run as a script."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self.values.pop(0)


def test_a_conflict_found_while_a_writer_stays_open_keeps_its_later_bytes() -> None:
    with machine("sync") as state:
        number = state.loop.call(state._create, "x")
        state.loop.call(state.life.write, number, 0, b"first")
        state.loop.call(state.life.fsync, number)  # uploaded: the blob exists
        state.remote.put_elsewhere("x", b"elsewhere")
        state.loop.call(state.life.write, number, 0, b"second")
        state.loop.call(state.life.fsync, number)  # the conflict: a copy beside x
        state.loop.call(state.life.write, number, 0, b"third!")
        state.loop.call(state._close, number)  # was: FileNotFoundError (ENOENT)
        blobs = state.remote.files()
        assert blobs["x"].data == b"elsewhere"
        (copy,) = [name for name in blobs if name.startswith("x.conflict-")]
        assert blobs[copy].data == b"third!"


def test_a_file_whose_blob_vanished_elsewhere_can_be_renamed() -> None:
    with machine("sync") as state:
        number = state.loop.call(state._create, "x")
        state.loop.call(state.life.write, number, 0, b"kept")
        state.loop.call(state.life.fsync, number)
        state.remote.delete_elsewhere("x")
        state.loop.call(state._rename, "x", "y")  # was: RemoteNotFound (ENOENT)
        state.loop.call(state._close, number)
        assert state.remote.files()["y"].data == b"kept"


# -- sequences later runs found (other seeds, more examples), each as it failed then --


def test_a_download_for_the_name_a_file_is_renamed_onto_lands_before_the_move() -> None:
    """A reader's download of x is in flight; x is deleted elsewhere, so no file is
    there to replace; an open file is renamed onto x. The download used to land after
    the move, over the moved file's bytes, and its writer's next upload put them."""
    with machine("sync", seeds={"x"}) as state:
        state.open_for_reading_held(Draws("x"))
        state.blob_vanishes_elsewhere(Draws("x"))
        state.open_missing(Draws("x"), writing=False)  # the listing drops x
        number = state._do_create("y")
        state._do_write(number, "start")
        state.fsync(Draws(number))
        state._do_rename("y", "x")
        if state.held is not None:
            state.download_lands()
        state._do_write(number, "end")
        state._do_close(number)  # was: the upload put the download's bytes, not these
        state._finish()


def test_a_folder_rename_lets_a_download_under_it_land_first() -> None:
    """A reader's download of d/x is in flight when d is renamed to e. It used to land
    at d/x's cache path after the move, where a new d/x then wrote over the bytes the
    reader had open."""
    with machine("async", folder=True) as state:
        state.blob_changes_elsewhere(Draws("d/x"))
        state.open_for_reading_held(Draws("d/x"))
        state.rename_folder()
        if state.held is not None:
            state.download_lands()
        (reader,) = state.handles
        state.mkdir(Draws("d"))
        number = state._do_create("d/x")
        state._do_write(number, "start")
        state.read(Draws(reader))  # was: the new d/x's bytes, which e/x never had
        state._finish()


def test_an_open_whose_file_is_unlinked_while_it_waits_fails_with_enoent() -> None:
    """A reader's download of y is in flight; y is unlinked and a new y made. The open
    used to return the new y's bytes through the old y's node."""
    with machine("sync", seeds={"y"}) as state:
        state.open_for_reading_held(Draws("y"))
        state.unlink(Draws("y"))
        state._do_create("y")
        state.remote.release_all()
        state.loop.call(state.held["done"].wait)
        assert isinstance(state.held.get("error"), NotFound)  # was: a handle reading b''
        state.held = None
        state._finish()


def test_fsync_through_one_descriptor_makes_another_ones_writes_durable() -> None:
    """fsync(2) is of the file, not of the descriptor: it used to upload nothing when
    the bytes came through another descriptor of the same file."""
    with machine("sync", seeds={"x"}) as state:
        first = state.loop.call(state._open, "x", os.O_RDWR)
        second = state.loop.call(state._open, "x", os.O_RDWR)
        state.loop.call(state.life.write, first, 0, b"through the first")
        state.loop.call(state.life.fsync, second)
        assert state.remote.files()["x"].data == b"through the first"
        state.loop.call(state._close, first)
        state.loop.call(state._close, second)
