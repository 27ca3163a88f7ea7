"""The composition root: start everything, mount, serve, and take it all down again.

`run_daemon` runs in the daemon process (in the foreground, or as the child that
`blobmount mount` starts). It reports readiness through a callback once the mount is
live, or raises a BlobmountError whose message is the one line the user sees.
Shutdown runs on an ExitStack, in reverse order of start-up, however it is reached:
`fusermount -u`, `blobmount unmount`, SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import fcntl
import logging
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from .azcopy import AzCopy
from .azure import AsyncContainer, Remote
from .azurite import Azurite
from .cache import ENTRY_ITEMS, TOP_ITEMS, Cache, SharedFolder, make_private
from .config import Config, MountEntry, embedded_config
from .config.locate import data_dir, embedded_cache_dir
from .control import ControlServer, socket_path
from .copysync import CopySync
from .errors import BlobmountError, MountPointError, ToolNotFound
from .eviction import Evictor
from .files import Files
from .fs import BlobFS
from .manage import Manager
from .metrics import Metrics
from .namespace import Namespace
from .sdnotify import Notifier
from .store import Store
from .supervise import guarded, supervised
from .taskdump import log_tasks_on
from .threads import SWITCH_INTERVAL, Threads
from .tools import find_azcopy
from .transfers import Downloads
from .uploads import Uploads
from .xattrs import Xattrs

log = logging.getLogger(__name__)

EMBEDDED_CONTAINER = "blobmount"
# The kernel re-asks for attributes this often at most; listings stay in the store
# for the configured TTL, so these calls cost no network.
MAX_ATTR_TIMEOUT = 1.0
# Each ends the mount cleanly: unmount, then upload what is pending.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# An AzCopy job whose counters stand still for this many remote_timeouts (60 s by
# default) is stopped: its chunks take a while on a slow link, but AzCopy would retry
# an account that does not answer for many minutes.
AZCOPY_STALLS = 6
# Where fusermount3 reads whether users other than root may give allow_other.
FUSE_CONF = Path("/etc/fuse.conf")


def check_mountpoint(path: str | os.PathLike) -> Path:
    """The mount point as an absolute path, or a MountPointError saying what is wrong."""
    mountpoint = Path(os.path.abspath(path))
    try:
        if not mountpoint.is_dir():
            problem = "does not exist" if not mountpoint.exists() else "is not a folder"
            raise MountPointError(f"mount point {mountpoint} {problem}")
        if os.path.ismount(mountpoint):
            # The kernel may still answer stat() of a dead FUSE mount from its cache;
            # statfs always asks the daemon, and gets ENOTCONN when there is none.
            os.statvfs(mountpoint)
            raise MountPointError(f"mount point {mountpoint} is already mounted")
        if any(mountpoint.iterdir()):
            raise MountPointError(f"mount point {mountpoint} is not empty")
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountPointError(
                f"mount point {mountpoint} is a dead mount; detach it with"
                f" `fusermount3 -u {mountpoint}`") from None
        raise MountPointError(f"mount point {mountpoint}: {exc.strerror}") from None
    return mountpoint


def check_allow_other(kernel_options: Iterable[str], fuse_conf: Path = FUSE_CONF) -> None:
    """Refuse `allow_other` from a user other than root in one line, unless `fuse_conf`
    says `user_allow_other`: fusermount3 refuses it then too, but says so only in the
    log, and the mount fails as "fuse_session_mount failed"."""
    if "allow_other" not in kernel_options or os.geteuid() == 0:
        return
    try:
        lines = fuse_conf.read_text(errors="replace").splitlines()
    except OSError:
        return  # fusermount3 reads it as root, and decides
    # fusermount3's reading: '#' starts a comment; the option stands alone on its line.
    if any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines):
        return
    raise MountPointError(f"-o allow_other: only root may give it, unless {fuse_conf}"
                          " has a line user_allow_other")


@contextlib.contextmanager
def cache_lock(cache_dir: Path, what: str = "cache folder") -> Iterator[None]:
    """Hold the cache folder for this daemon alone: two would corrupt each other's cache."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise BlobmountError(
                f"{what} {cache_dir} is in use by another blobmount daemon ({holder})"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        yield


@dataclass
class _Mount:
    """What the status request reports on."""

    config: Config
    mountpoint: Path
    store: Store
    downloads: Downloads
    uploads: Uploads
    #: a clean unmount uploads what is pending first, unless told not to wait
    drain_on_exit: bool = True

    async def status(self, _request: dict[str, Any]) -> dict[str, Any]:
        started = self.downloads.started
        return {
            "uploads": self.uploads.status(),
            "pid": os.getpid(),
            "mountpoint": str(self.mountpoint),
            "config": self.config.source,
            "mounts": [_describe(entry) for entry in self.config.mounts],
            "cache_bytes": self.store.cached_bytes(),
            "downloads": {"total": self.downloads.started_total, "by_path": dict(started)},
            # fetched by ranged GETs for large files read by blocks
            "blocks": dict(self.downloads.blocks.fetched),
        }

    async def sync(self, _request: dict[str, Any]) -> dict[str, Any]:
        failed = await self.uploads.sync()
        return {"failed": [{"blob": f"{row.account}/{row.container}/{row.blob}",
                            "error": self.uploads.why(row)} for row in failed]}

    async def no_wait(self, _request: dict[str, Any]) -> dict[str, Any]:
        self.drain_on_exit = False
        return {}


def _describe(entry: MountEntry) -> dict[str, Any]:
    return {
        "local": entry.local,
        "account": entry.account.account_name,
        "endpoint": entry.account.endpoint,
        "container": entry.container,
        "prefix": entry.prefix,
        "cache": str(entry.cache_dir),
        "read_only": entry.read_only,
        "upload": entry.upload,
    }


async def _check_remotes(remotes: list[AsyncContainer], entries: tuple[MountEntry, ...],
                         ) -> None:
    for remote, entry in zip(remotes, entries, strict=True):
        try:
            await remote.check()
        except BlobmountError as exc:
            raise type(exc)(f"mount entry {entry.local!r}: {exc}") from None


def _azcopy_factory(config: Config, threads: Threads, metrics: Metrics | None = None,
                    ) -> Callable[[MountEntry], AzCopy] | None:
    try:
        binary = find_azcopy()
    except ToolNotFound as exc:
        log.warning("%s; every download goes through the SDK", exc)
        return None
    jobs: dict[str, AzCopy] = {}

    def azcopy_for(entry: MountEntry) -> AzCopy:
        if entry.local not in jobs:
            jobs[entry.local] = AzCopy(binary, entry.cache_dir / "azcopy", threads=threads,
                                       stall_timeout=AZCOPY_STALLS * config.settings.remote_timeout,
                                       metrics=metrics)
        return jobs[entry.local]

    return azcopy_for


async def serve(config: Config | None, mountpoint: Path, *,
                ready: Callable[[str], None], fuse_options: Iterable[str] = (),
                setting_options: Mapping[str, int] | None = None) -> None:
    """Mount `config` (None: the embedded Azurite default) and serve until unmounted.

    `fuse_options` go to the kernel with the mount (`allow_other`, `ro`, ...);
    `setting_options` (uid, gid, umask given with -o) override the config's. Under
    systemd (`Type=notify`) the service manager hears READY=1 once the mount is live
    and STOPPING=1 once it is gone.
    """
    systemd = Notifier.from_environment()
    with contextlib.ExitStack() as stack:
        note = ""
        if config is None:
            config, note = await _start_embedded(stack)
        if setting_options:
            config = config.with_settings(**setting_options)
        parts = await _assemble(config, mountpoint, stack)
        # What a crash left in the journal goes up before anything can overwrite it.
        left = await parts.uploads.sync()
        orphaned = parts.uploads.orphaned()
        if len(left) > len(orphaned):
            log.warning("%d uploads from before still fail; they stay in the journal",
                        len(left) - len(orphaned))
        for row in orphaned:
            log.warning("upload not tried: %s", parts.uploads.why(row))
        # default_permissions (pyfuse3's default too, stated here because it is the only
        # permission check): the kernel checks the shown mode, uid and gid; we check none.
        options = (set(pyfuse3.default_options) | set(fuse_options)
                   | {"fsname=blobmount", "subtype=blobmount", "default_permissions"})
        # Caught from before the mount exists: a SIGTERM just after it would otherwise
        # kill the daemon and leave a dead mount ("Transport endpoint is not connected").
        signals = stack.enter_context(trio.open_signal_receiver(*STOP_SIGNALS))
        try:
            pyfuse3.init(parts.operations, str(mountpoint), options)
        except RuntimeError as exc:
            raise MountPointError(f"cannot mount on {mountpoint}: {exc}") from None
        # Unmounts unless `fusermount -u` already did; nothing stays half-mounted.
        stack.callback(pyfuse3.close, unmount=True)
        count = len(config.mounts)
        mounted = f"mounted {count} {'entry' if count == 1 else 'entries'} on {mountpoint}"

        def live() -> None:
            log.info("mounted %s on %s", config.source, mountpoint)
            ready(note or mounted)
            systemd.notify(READY=1, STATUS=mounted)

        await _run_mounted(parts, signals, live, partial(
            _widen_read_ahead, parts.threads, mountpoint, config.settings.read_ahead_kb))
        log.info("unmounted %s", mountpoint)
        await _drain(parts, mountpoint, systemd)
        await parts.copies.sync()  # a clean stop leaves none for the next mount to drop
        _exit_watchdog()
    log.info("daemon exiting")


async def _widen_read_ahead(threads: Threads, mountpoint: Path, kib: int) -> None:
    """Let the kernel read `kib` KiB ahead through the mount (its device's
    read_ahead_kb). Only root may; anyone else keeps the kernel's default. The kernel
    resets it when it takes the answer to FUSE's INIT: the first stat() of the mount
    point to be answered comes after that. 0: the kernel's default stays."""
    if not kib:
        return
    try:
        device = (await threads.run_sync(os.stat, mountpoint)).st_dev
        setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
        await threads.run_sync(setting.write_text, f"{kib}\n")
    except OSError as exc:
        log.debug("read-ahead of %s stays at the kernel's default: %s", mountpoint, exc)


@dataclass
class _Parts:
    """The daemon's components, wired together: what serving a mount needs."""

    operations: BlobFS
    downloads: Downloads
    uploads: Uploads
    evictor: Evictor
    copies: CopySync
    mount: _Mount
    control: ControlServer
    threads: Threads


async def _assemble(config: Config, mountpoint: Path, stack: contextlib.ExitStack) -> _Parts:
    """Open the store, reach every container (one clear error if one cannot be), and
    build the components on them; what must be closed goes on `stack`."""
    settings = config.settings
    _make_caches_private(config)
    stack.enter_context(cache_lock(config.cache_dir))
    store = Store(config.cache_dir / "blobmount.sqlite")
    stack.callback(store.close)
    # The one bound on worker threads: every request to a container, every local
    # blocking call (hashes, fsyncs, installs) holds one of its tokens.
    threads = Threads(max(4, settings.max_parallel_transfers * 2))
    metrics = Metrics()
    remotes = []
    for entry in config.mounts:
        remote = Remote(entry.account, entry.container, timeout=settings.remote_timeout,
                        metrics=metrics)
        stack.callback(remote.close)
        remotes.append(AsyncContainer(remote, threads))
    await _check_remotes(remotes, config.mounts)

    cache = Cache(store)
    cache.make_folders(config.mounts)
    azcopy_for = _azcopy_factory(config, threads, metrics)
    downloads = Downloads(cache, azcopy_for, sdk_max=settings.sdk_download_max,
                          block_min=settings.block_read_min)
    namespace = Namespace(store, config.mounts, remotes, ttl=settings.listing_ttl)
    namespace.build_mount_table()
    evictor = Evictor(store, cache, config.mounts, low_watermark=settings.cache_low_watermark)
    evictor.protect(downloads.in_use)
    evictor.expect(downloads.blocks.arriving)
    downloads.on_downloaded = evictor.wake
    downloads.make_room = evictor.make_room

    def uploaded(target: Any, blob: str, *done: Any) -> None:
        namespace.uploaded(target.index, blob, *done)
        evictor.uploaded(target.entry, blob)

    def conflicted(target: Any, blob: str) -> None:
        metrics.conflicts.inc()
        namespace.conflicted(target.index, blob)

    uploads = Uploads(store, cache, config.mounts, remotes, azcopy_for,
                      settings=settings, threads=threads, on_uploaded=uploaded,
                      on_conflict=conflicted)
    uploads.use_patches(downloads.patches)
    # One list, read by the file system and switched by the control request hold_async.
    entries = list(config.mounts)
    files = Files(namespace, cache, downloads, uploads, entries,
                  read_ahead_files=settings.read_ahead_files)
    files.on_copy = metrics.cache_open
    files.recover()
    xattrs = Xattrs(namespace, cache, uploads, config.mounts) if settings.xattrs else None
    operations = BlobFS(namespace, files, entries,
                        attr_timeout=min(settings.listing_ttl, MAX_ATTR_TIMEOUT),
                        xattrs=xattrs, uid=settings.uid, gid=settings.gid,
                        umask=settings.umask, permissions=settings.permissions)
    operations.metrics = metrics
    evictor.protect(files.paths_in_use)
    mount = _Mount(config, mountpoint, store, downloads, uploads)
    manager = Manager(entries, remotes, store, cache, downloads, uploads, evictor)

    async def status(request: dict[str, Any]) -> dict[str, Any]:
        return {**await mount.status(request), **manager.status(),
                "requests": metrics.requests(), "metrics": metrics.address}

    metrics.watch(manager.snapshot)
    if settings.metrics_address:
        stack.callback(metrics.close)  # before the store closes: a scrape reads it
        metrics.serve(*settings.metrics_address)

    # Resolved before mounting: once mounted, touching the mount point from this
    # process before pyfuse3.main() runs would wait for ourselves forever.
    control = ControlServer(socket_path(mountpoint), {
        "status": status, "sync": mount.sync, "no_wait": mount.no_wait,
        **manager.handlers()}, cancel_on_close=manager.cancel_on_close)
    copies = CopySync(store, config.mounts, threads, settings.cache_sync_interval)
    return _Parts(operations, downloads, uploads, evictor, copies, mount, control, threads)


def _make_caches_private(config: Config) -> None:
    """Every cache folder, and what blobmount keeps in it, readable by this user alone."""
    folders: dict[Path, list[str]] = {config.cache_dir: list(TOP_ITEMS)}
    for entry in config.mounts:
        folders.setdefault(entry.cache_dir, []).extend(ENTRY_ITEMS)
    tightened: dict[Path, int] = {}
    for folder, ours in folders.items():
        try:
            tightened[folder] = make_private(folder, ours)
        except SharedFolder as exc:
            log.warning("cache folder %s: new copies are private, but other users may"
                        " list the folder; give blobmount a folder of its own", exc)
        except OSError as exc:
            raise BlobmountError(f"cache folder {folder}: {exc.strerror}") from None
    loose = [str(folder) for folder, count in tightened.items() if count]
    if loose:
        log.warning("cache folder %s was readable by other users: made it private (0700"
                    " folders, 0600 files; %d modes changed)", ", ".join(loose),
                    sum(tightened.values()))


def _raise_file_limit() -> None:
    """Allow as many open files as the hard limit does: the daemon holds a descriptor
    for each file open through the mount, and the soft limit is often only 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.debug("open files: soft limit raised from %d to %d", soft, hard)
        except (OSError, ValueError) as exc:
            log.warning("open files stay limited to %d: %s", soft, exc)


async def _run_mounted(parts: _Parts, signals: AsyncIterator[int],
                       live: Callable[[], None], tune: Callable[[], Awaitable[None]],
                       ) -> None:
    """Serve the mounted file system, its control socket and its background work until
    the kernel ends the mount; `live` is called once all of it runs, `tune` runs
    beside the first requests."""
    async with trio.open_nursery() as nursery:
        await nursery.start(parts.control.serve)
        nursery.start_soon(_terminate_on, signals)
        nursery.start_soon(_log_tasks_on_usr1)
        # A worker that fails is logged and started again; the mount goes on.
        nursery.start_soon(supervised, "the upload worker", parts.uploads.run)
        nursery.start_soon(supervised, "the cache evictor", parts.evictor.run)
        nursery.start_soon(supervised, "the sync of downloaded copies", parts.copies.run)
        nursery.start_soon(guarded, "tuning the kernel's read-ahead", tune)
        parts.downloads.run_in(nursery)
        live()
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _drain(parts: _Parts, mountpoint: Path, systemd: Notifier) -> None:
    """After the unmount: upload what is pending, unless told not to wait."""
    drain = parts.mount.drain_on_exit
    pending = parts.uploads.status()["count"] if drain else 0
    draining = f"; uploading {pending} pending files" if pending else ""
    systemd.notify(STOPPING=1, STATUS=f"unmounted {mountpoint}{draining}")
    if drain:
        left = await parts.uploads.sync()
        if left:
            log.warning("%d uploads failed at unmount; the next mount retries them",
                        len(left))


def _exit_watchdog(seconds: float = 20.0) -> None:
    """Past the uploads, nothing may keep the daemon alive for long: should the rest of
    the shutdown hang, put every thread's stack in the log and exit."""
    stream = next((handler.stream for handler in logging.getLogger().handlers
                   if isinstance(handler, logging.FileHandler)), None)
    if stream is not None:
        faulthandler.dump_traceback_later(seconds, exit=True, file=stream)


async def _log_tasks_on_usr1() -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        await log_tasks_on(signals)


async def _terminate_on(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.info("received %s: unmounting", signal.Signals(signum).name)
        pyfuse3.terminate()
        return


async def _start_embedded(stack: contextlib.ExitStack) -> tuple[Config, str]:
    """Start the private Azurite of the embedded default and make its container."""
    # Two Azurites on one folder would each save their own view over the other's.
    stack.enter_context(cache_lock(data_dir(), "data folder"))
    location = data_dir() / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    azurite = Azurite(location)
    # Started from the main thread, Azurite is told to exit when the daemon dies, even by
    # kill -9 (its death signal follows the starting thread, and worker threads come and
    # go). Nothing else runs yet, so blocking the loop this once costs nothing.
    azurite.start()
    stack.callback(azurite.stop)
    config = embedded_config(azurite.endpoint, embedded_cache_dir())
    remote = Remote(config.mounts[0].account, EMBEDDED_CONTAINER)
    try:
        # Before the daemon's threads exist, and with nothing else running: in the loop.
        remote.create_if_missing()
    finally:
        remote.close()
    entry = config.mounts[0]
    return config, (f"no config found: serving the embedded Azurite ({azurite.endpoint},"
                    f" data in {location}); container {EMBEDDED_CONTAINER!r} is"
                    f" {entry.local}/ under the mount point")


def run_daemon(config: Config | None, mountpoint: Path,
               ready: Callable[[str], None], fuse_options: Iterable[str] = (),
               setting_options: Mapping[str, int] | None = None) -> None:
    """Run the daemon to the end in this process (blocking)."""
    # Whatever the caller's umask, what the daemon makes (the store, its lock and WAL,
    # cached copies, AzCopy's folders) is its user's alone.
    os.umask(0o077)
    _raise_file_limit()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        trio.run(partial(serve, config, mountpoint, ready=ready, fuse_options=fuse_options,
                         setting_options=setting_options))
    except BaseExceptionGroup as group:
        # A nursery wraps what its tasks raise; the user needs the error itself.
        matched, _ = group.split(BlobmountError)
        if matched is None:
            raise
        error: BaseException = matched
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None
