"""The CLI commands on a live mount: unmount, sync, status, and its cache: prefetch,
cache ls/evict/clear, stats.

cli.py adds them to its group (`add_to(cli)`). Each asks the daemon of the mount at
(or holding) the path it is given, on its control socket or through `Client`; the
cache's commands find the mount from the path (the deepest blobmount mount point
holding it). Problems go to stderr as `blobmount: ...` lines, and the exit status
is 1 when anything failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from functools import partial
from typing import Any

import click

from . import control, inventory
from .client import Client, NotUnderAMount, find_mount
from .errors import BlobmountError
from .progress import ProgressBar, human_bytes

UNMOUNT_TIMEOUT = 60.0


def _by_mount(paths: Iterable[str]) -> tuple[dict[str, list[str]], int]:
    """The paths grouped by the mount point they are under, each relative to it; and
    how many are under none (each said on stderr)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    outside = 0
    for path in paths:
        try:
            mountpoint, relative = find_mount(path)
        except NotUnderAMount as exc:
            _warn(str(exc))
            outside += 1
            continue
        grouped[mountpoint].append(relative)
    return grouped, outside


def _read_list(source: str) -> list[str]:
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    with stream:
        return [line.rstrip("\n") for line in stream if line.strip()]


def _warn(text: str) -> None:
    click.echo(f"blobmount: {text}", err=True)


def _show_prefetch(bar: ProgressBar, progress: dict[str, Any]) -> None:
    bar.update(progress["files_done"], progress["files_total"], progress["bytes_done"],
               progress["bytes_total"])


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--from-file", "from_file", metavar="LIST",
              help="Also the paths in LIST, one a line ('-': standard input).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@click.option("--json", "as_json", is_flag=True,
              help="No progress bar; print what each mount did as JSON.")
def prefetch(paths: tuple[str, ...], from_file: str | None, quiet: bool,
             as_json: bool) -> None:
    """Download the files at or under PATHS into the cache, in one AzCopy job per mount
    entry, so opening them later costs no download."""
    wanted = list(paths) + (_read_list(from_file) if from_file else [])
    if not wanted:
        raise click.UsageError("give at least one PATH (or --from-file LIST)")
    grouped, failures = _by_mount(wanted)
    done = []
    for mountpoint, relative in grouped.items():
        bar = ProgressBar(enabled=False if quiet or as_json else None)
        started = time.monotonic()
        try:
            result = Client(mountpoint).prefetch(
                relative, check=False, on_progress=partial(_show_prefetch, bar))
        finally:
            bar.close()
        for failure in result["failed"]:
            _warn(f"cannot prefetch {failure['path']}: {failure['error']}")
        for local in result.get("over_limit", ()):
            _warn(f"warning: {local}/ got more than its cache_max_bytes; the least recently"
                  " used files are evicted already")
        failures += len(result["failed"])
        done.append({"mountpoint": mountpoint, **result,
                     "seconds": round(time.monotonic() - started, 3)})
        if not quiet and not as_json:
            jobs = result["azcopy_jobs"]
            click.echo(f"{mountpoint}: {result['files']} files ({human_bytes(result['bytes'])}):"
                       f" {result['downloaded']} downloaded"
                       f" ({human_bytes(result['downloaded_bytes'])}) in"
                       f" {time.monotonic() - started:.1f} s by {jobs} AzCopy"
                       f" job{'' if jobs == 1 else 's'}; {result['cached']} were cached already")
    if as_json:
        _print_json(done)
    if failures:
        sys.exit(1)


@click.group()
def cache() -> None:
    """List and drop the cached copies of a live mount."""


@cache.command("ls")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_ls(path: str, as_json: bool) -> None:
    """List the cached copies at or under PATH (a mount point, or a path under one):
    state (clean, dirty: being written, pending: not uploaded yet), size, last use."""
    mountpoint, relative = find_mount(path)
    files = Client(mountpoint).cache_ls(relative)
    if as_json:
        _print_json(files)
        return
    for item in files:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["last_access"]))
        click.echo(f"{item['state']:<8} {item['size']:>12} {used}  {item['path']}")


@cache.command("evict")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--force", is_flag=True, help="Upload files not uploaded yet, then drop them.")
@click.option("--json", "as_json", is_flag=True,
              help="Print what was dropped and kept, per mount, as JSON.")
def cache_evict(paths: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Drop the cached copies at or under PATHS; the next open downloads them again.
    Files not uploaded yet stay, unless --force."""
    grouped, refused = _by_mount(paths)
    results = []
    for mountpoint, relative in grouped.items():
        result = {"mountpoint": mountpoint, **Client(mountpoint).evict(relative, force=force)}
        refused += _report_evicted(result, as_json)
        results.append(result)
    if as_json:
        _print_json(results)
    if refused:
        sys.exit(1)


@cache.command("clear")
@click.argument("mountpoint", type=click.Path())
@click.option("--force", is_flag=True, help="Upload files not uploaded yet, then drop them.")
@click.option("--json", "as_json", is_flag=True, help="Print what was dropped and kept as JSON.")
def cache_clear(mountpoint: str, force: bool, as_json: bool) -> None:
    """Drop every cached copy of the mount at MOUNTPOINT (files not uploaded yet stay,
    unless --force)."""
    where, relative = find_mount(mountpoint)
    result = {"mountpoint": where, **Client(where).evict([relative], force=force)}
    refused = _report_evicted(result, as_json)
    if as_json:
        _print_json(result)
    if refused:
        sys.exit(1)


def _report_evicted(result: dict, as_json: bool) -> int:
    """Say what an eviction dropped (unless `as_json`) and kept; how many were kept."""
    for item in result["refused"]:
        _warn(f"kept {item['path']}: {item['reason']}")
    if not as_json:
        click.echo(f"{result['mountpoint']}: dropped {len(result['evicted'])} cached files"
                   f" ({human_bytes(result['bytes'])})")
    return len(result["refused"])


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(path: str, as_json: bool) -> None:
    """For each mount entry under PATH (or the folder PATH): files and bytes in the
    container, bytes cached, uploads pending."""
    mountpoint, relative = find_mount(path)
    rows = Client(mountpoint).stats(relative)
    if as_json:
        _print_json(rows)
        return
    click.echo(f"{'FILES':>8} {'BYTES':>14} {'CACHED':>14} {'PENDING':>8}  PATH")
    for row in rows:
        click.echo(f"{row['files']:>8} {row['bytes']:>14} {row['cached_bytes']:>14}"
                   f" {row['pending_uploads']:>8}  {row['path']}")


# -- the daemon of a mount ----------------------------------------------------------


@click.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--no-wait", is_flag=True,
              help="Leave pending uploads in the journal for the next mount.")
@click.option("--timeout", type=click.FloatRange(min=0), default=UNMOUNT_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="How long to wait for the daemon to upload and exit; 0: no limit.")
def unmount(mountpoint: str, no_wait: bool, timeout: float) -> None:
    """Unmount MOUNTPOINT and wait for its daemon to exit (after pending uploads)."""
    where = os.path.realpath(mountpoint)  # as the kernel lists it
    try:
        pid = control.request(where, "status", timeout=5)["pid"]
        if no_wait:
            control.request(where, "no_wait", timeout=5)
    except BlobmountError:
        pid = None
    if not is_mounted(where):
        raise BlobmountError(f"{where} is not mounted")
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    result = subprocess.run([fusermount, "-u", where], capture_output=True, text=True)
    if result.returncode != 0:
        raise BlobmountError(f"cannot unmount {where}: {result.stderr.strip()}")
    if pid is not None:
        _wait_for_exit(pid, timeout or float("inf"))


def is_mounted(path: str) -> bool:
    """True when `path` is a mount point, even one whose daemon died."""
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as mounts:
        for line in mounts:
            if inventory.unescape(line.split(" ")[1]) == path:
                return True
    return False


def _running(pid: int) -> bool:
    """Whether `pid` runs; an exited daemon that its parent has not reaped yet does not.

    The daemon's parent is whatever adopted it (PID 1, a subreaper), which may reap
    late or, as some container inits, never.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_for_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return
        time.sleep(0.05)
    raise BlobmountError(f"the daemon (pid {pid}) is still running after {timeout:.0f} s")


@click.command()
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print the uploads that failed (blob, error) as JSON.")
def sync(mountpoint: str, as_json: bool) -> None:
    """Wait until every pending upload of MOUNTPOINT is in the container."""
    failed = Client(mountpoint).sync(check=False)
    if as_json:
        click.echo(json.dumps({"failed": failed}, indent=2, sort_keys=True))
    else:
        for upload in failed:
            click.echo(f"blobmount: not uploaded: {upload['blob']}: {upload['error']}",
                       err=True)
    if failed:
        sys.exit(1)


@click.command()
@click.argument("mountpoint", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's view as JSON.")
def status(mountpoint: str | None, as_json: bool) -> None:
    """Show what the daemon serving MOUNTPOINT is doing; with no MOUNTPOINT, list every
    blobmount mount on this machine (live, or dead with no daemon) and its config."""
    if mountpoint is None:
        print_mounts(as_json)
        return
    reply = control.request(os.path.abspath(mountpoint), "status")
    if as_json:
        click.echo(json.dumps(reply, indent=2, sort_keys=True))
        return
    click.echo(f"{reply['mountpoint']}: daemon pid {reply['pid']}, config {reply['config']}")
    for entry in reply["mounts"]:
        mode = "read-only" if entry["read_only"] else f"read-write, upload {entry['upload']}"
        click.echo(f"  {entry['local']}/ -> {entry['account']}/{entry['container']}/"
                   f"{entry['prefix']} ({mode}; cache {entry['cache']})")
    click.echo(f"  cache: {reply['cache_bytes']} bytes;"
               f" downloads since mount: {reply['downloads']['total']};"
               f" pending uploads: {reply['uploads']['count']}"
               f" ({len(reply['uploads']['failed'])} failing)")
    for upload in reply["uploads"].get("orphaned", []):
        click.echo(f"  upload not tried: {upload['error']}")
    requests = reply.get("requests")
    if requests is not None:
        click.echo(f"  requests to the account: {_request_counts(requests)}")
    if reply.get("metrics"):
        click.echo(f"  metrics: {reply['metrics']}")


def _request_counts(requests: dict[str, Any]) -> str:
    """'12 (get 3, list 2, put 1); 4096 bytes down, 1024 up; AzCopy jobs: 1 download'"""
    ops = ", ".join(f"{op} {count}" for op, count in sorted(requests["by_op"].items(),
                                                            key=lambda item: -item[1]))
    failed = sum(count for status, count in requests["by_status"].items()
                 if status == "error" or int(status) >= 400)
    text = f"{requests['total']}" + (f" ({ops})" if ops else "")
    if failed:
        text += f", {failed} answered with an error or not at all"
    moved = requests["bytes"]
    text += f"; {moved['down']} bytes down, {moved['up']} up"
    if requests["azcopy_jobs"]:
        text += "; AzCopy jobs: " + ", ".join(
            f"{count} {kind}" for kind, count in sorted(requests["azcopy_jobs"].items()))
    return text


def print_mounts(as_json: bool) -> None:
    """Every blobmount mount on this machine (`status`, `mount --list`)."""
    records = inventory.every_mount()
    if as_json:
        click.echo(json.dumps([record.as_json() for record in records], indent=2,
                              sort_keys=True))
    elif not records:
        click.echo("no blobmount mounts on this machine")
    for record in records if not as_json else ():
        click.echo(inventory.describe(record))


def add_to(group: click.Group) -> None:
    """Add these commands to the `blobmount` group."""
    for command in (unmount, sync, status, prefetch, cache, stats):
        group.add_command(command)
