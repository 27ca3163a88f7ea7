"""The `blobmount` command line.

Every error a user can cause ends as one line on stderr and a non-zero exit, never a
traceback. `mount` checks what it can in the foreground (config, mount point), then
starts the daemon in its own session and waits until the daemon says the mount is
live, or says why it is not.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from . import control
from .config import Config, find_config, load_config
from .errors import BlobmountError

# The daemon checks every account before it mounts; an unreachable one fails within
# its own timeouts, so this only guards against a daemon that hangs.
READY_TIMEOUT = 300.0
UNMOUNT_TIMEOUT = 60.0


def default_log_file() -> Path:
    return control.state_dir() / "blobmount.log"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Mount Azure Blob Storage containers as one directory tree."""


@cli.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--config", "config_file", metavar="FILE",
              help="Config file [default: $BLOBMOUNT_CONFIG, ~/.config/blobmount/config.yaml,"
                   " /etc/blobmount/config.yaml for root, $AZFUSE_CLOUD_FUSE_CONFIG_FILE;"
                   " none: an embedded Azurite].")
@click.option("-f", "--foreground", is_flag=True, help="Stay attached instead of daemonizing.")
@click.option("-v", "--verbose", count=True, help="More log detail (-v info, -vv debug).")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Log file [default: ~/.blobmount/blobmount.log].")
@click.option("--ready-fd", type=int, hidden=True)
def mount(mountpoint: str, config_file: str | None, foreground: bool, verbose: int,
          log_file: str | None, ready_fd: int | None) -> None:
    """Mount the mount table of the config on MOUNTPOINT."""
    from .daemon import check_mountpoint

    config_path = find_config(config_file)
    config = load_config(config_path) if config_path else None
    _warn_readable_secrets(config)
    where = check_mountpoint(mountpoint)
    log_path = Path(log_file).absolute() if log_file else default_log_file()
    if foreground:
        _run_foreground(config, where, verbose, log_path, ready_fd)
        return
    args = [sys.executable, "-m", "blobmount", "mount", str(where), "--foreground",
            "--log-file", str(log_path)] + ["-v"] * verbose
    if config_path:
        args += ["--config", str(Path(config_path).absolute())]
    click.echo(_start_daemon(args, log_path))


def _warn_readable_secrets(config: Config | None) -> None:
    if config is None or not config.secrets() or not os.path.isfile(config.source):
        return
    if os.stat(config.source).st_mode & 0o077:
        click.echo(f"blobmount: warning: {config.source} holds secrets and others can read"
                   f" it; run `chmod 600 {config.source}`", err=True)


def _run_foreground(config: Config | None, mountpoint: Path, verbose: int, log_path: Path,
                    ready_fd: int | None) -> None:
    from .daemon import run_daemon
    from .log import setup_logging

    setup_logging(verbose, log_path, stderr=ready_fd is None)
    if ready_fd is None:
        run_daemon(config, mountpoint, lambda note: click.echo(note))
        return
    # Daemonized: report to the waiting `blobmount mount`, then keep no folder busy.
    os.chdir("/")
    channel = os.fdopen(ready_fd, "w")

    def ready(note: str) -> None:
        try:
            channel.write(f"ok {note}\n")
            channel.close()
        except BrokenPipeError:
            # Nobody waits: the user interrupted `blobmount mount`. Unmount and go.
            raise BlobmountError("`blobmount mount` was interrupted: not serving"
                                 " the mount") from None

    try:
        run_daemon(config, mountpoint, ready)
    except BlobmountError as exc:
        if not channel.closed:
            channel.write(f"error {exc}\n")
            channel.close()
        raise


def _start_daemon(args: list[str], log_path: Path) -> str:
    """Start the daemon and wait for its word: the note to print, or a BlobmountError."""
    try:
        return _wait_for_daemon(args, log_path)
    except KeyboardInterrupt:
        # Our end of the channel is closed now: the daemon sees that, and unmounts.
        raise BlobmountError(f"interrupted: the daemon gives up the mount; see {log_path}"
                             ) from None


def _wait_for_daemon(args: list[str], log_path: Path) -> str:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log_file:
        daemon = subprocess.Popen(
            args + ["--ready-fd", str(write_end)], pass_fds=(write_end,),
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    os.close(write_end)
    message = b""
    deadline = time.monotonic() + READY_TIMEOUT
    with os.fdopen(read_end, "rb") as channel:
        while not message.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([channel], [], [], remaining)[0]:
                daemon.kill()
                raise BlobmountError(f"the daemon did not get ready in time; see {log_path}")
            data = os.read(channel.fileno(), 4096)
            if not data:
                break
            message += data
    status, _, text = message.decode(errors="replace").strip().partition(" ")
    if status == "ok":
        return text
    code = daemon.wait()
    if status == "error":
        raise BlobmountError(text)
    raise BlobmountError(
        f"the daemon exited (code {code}) before the mount was ready; see {log_path}")


@cli.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--no-wait", is_flag=True,
              help="Leave pending uploads in the journal for the next mount.")
def unmount(mountpoint: str, no_wait: bool) -> None:
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
        _wait_for_exit(pid, UNMOUNT_TIMEOUT)


def is_mounted(path: str) -> bool:
    """True when `path` is a mount point, even one whose daemon died."""
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as mounts:
        for line in mounts:
            # Space, tab, newline and backslash are written as octal escapes (\040).
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split(" ")[1])
            if point == path:
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


@cli.command()
@click.argument("mountpoint", type=click.Path(file_okay=False))
def sync(mountpoint: str) -> None:
    """Wait until every pending upload of MOUNTPOINT is in the container."""
    failed = control.request(os.path.abspath(mountpoint), "sync", timeout=None)["failed"]
    for upload in failed:
        click.echo(f"blobmount: not uploaded: {upload['blob']}: {upload['error']}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's view as JSON.")
def status(mountpoint: str, as_json: bool) -> None:
    """Show what the daemon serving MOUNTPOINT is doing."""
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


def main() -> None:
    """Entry point: run the CLI, turning a BlobmountError into one line and exit 1."""
    try:
        cli(prog_name="blobmount")
    except BlobmountError as exc:
        click.echo(f"blobmount: {exc}", err=True)
        sys.exit(1)
