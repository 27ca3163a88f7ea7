"""The CLI commands for a live mount's cache: prefetch, cache ls/evict/clear, stats.

cli.py adds them to its group (`add_to(cli)`). Each finds the mount from the path it
is given (the deepest blobmount mount point holding it) and asks that mount's daemon
through `Client`. Problems go to stderr as `blobmount: ...` lines, and the exit status
is 1 when anything failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable

import click

from .client import Client, NotUnderAMount, find_mount
from .progress import ProgressBar, human_bytes


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
                relative, check=False,
                on_progress=lambda p, bar=bar: bar.update(p["files_done"], p["files_total"],
                                                          p["bytes_done"], p["bytes_total"]))
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


def add_to(group: click.Group) -> None:
    """Add these commands to the `blobmount` group."""
    for command in (prefetch, cache, stats):
        group.add_command(command)
