"""The `blobmount` command line.

Every error a user can cause ends as one line on stderr and a non-zero exit, never a
traceback. `mount` checks what it can in the foreground (config, mount point), then
starts the daemon in its own session and waits until the daemon says the mount is
live, or says why it is not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import select
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from . import control, helper
from .commands import add_to, print_mounts
from .config import (
    Config,
    container_name,
    default_variables,
    find_config,
    load_config,
    setting_option,
)
from .errors import BlobmountError

# The daemon checks every account before it mounts; an unreachable one fails within
# its own timeouts, so this only guards against a daemon that hangs.
READY_TIMEOUT = 300.0


def default_log_file() -> Path:
    return control.state_dir() / "blobmount.log"


def _print_version(context: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or context.resilient_parsing:
        return
    from .versions import describe, versions

    click.echo(describe(versions()))
    context.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version,
              help="Show the versions of blobmount, Python, its libraries, libfuse and AzCopy.")
def cli() -> None:
    """Mount Azure Blob Storage containers as one directory tree."""


@cli.command()
@click.argument("mountpoint", type=click.Path(), required=False)
@click.option("--config", "config_file", metavar="FILE",
              help="Config file [default: $BLOBMOUNT_CONFIG, ~/.config/blobmount/config.yaml,"
                   " /etc/blobmount/config.yaml for root, $AZFUSE_CLOUD_FUSE_CONFIG_FILE;"
                   " none: an embedded Azurite].")
@click.option("--user", metavar="NAME",
              help="The config's {user} [default: $BLOBMOUNT_USER, else your user name].")
@click.option("-o", "--options", "mount_options", metavar="OPTS", multiple=True,
              help="Mount options, comma-separated: the kernel's "
                   + ", ".join(sorted(helper.KERNEL))
                   + "; and uid=N, gid=N, umask=OCTAL (who owns the files shown, and"
                     " their mode; these override the config).")
@click.option("--list", "list_mounts", is_flag=True,
              help="List every blobmount mount on this machine instead.")
@click.option("-f", "--foreground", is_flag=True, help="Stay attached instead of daemonizing.")
@click.option("-v", "--verbose", count=True, help="More log detail (-v info, -vv debug).")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Log file [default: ~/.blobmount/blobmount.log].")
@click.option("--strict", is_flag=True,
              help="Refuse a config that holds secrets and that others can read, and a"
                   " cache folder others can read (default: a warning; the folder is"
                   " made private).")
@click.option("--dry-run", is_flag=True,
              help="Check everything a mount would check, without mounting (as `check`).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the mount (mountpoint, pid, note), the list, or the checks.")
@click.option("--ready-fd", type=int, hidden=True)
def mount(mountpoint: str | None, config_file: str | None, user: str | None,
          mount_options: tuple[str, ...], list_mounts: bool, foreground: bool, verbose: int,
          log_file: str | None, strict: bool, dry_run: bool, as_json: bool,
          ready_fd: int | None) -> None:
    """Mount the mount table of the config on MOUNTPOINT."""
    from .daemon import check_allow_other, check_mountpoint

    if list_mounts:
        if mountpoint is not None or dry_run:
            raise click.UsageError("--list takes no MOUNTPOINT and no --dry-run")
        print_mounts(as_json=as_json)
        return
    if dry_run:
        _dry_run(config_file, mountpoint, user, strict, as_json,
                 (lambda: _mount_options(mount_options)) if mount_options else None)
        return
    if mountpoint is None:
        raise click.UsageError("Missing argument 'MOUNTPOINT' (or give --list).")
    kernel_options, setting_options = _mount_options(mount_options)
    check_allow_other(kernel_options)
    variables = default_variables(user)
    config_path = find_config(config_file)
    config = load_config(config_path, variables) if config_path else None
    _warn_readable_secrets(config, strict=strict)
    if strict:
        _refuse_loose_caches(config)
    where = check_mountpoint(mountpoint)
    log_path = Path(log_file).absolute() if log_file else default_log_file()
    if foreground:
        _run_foreground(config, where, verbose, log_path, ready_fd, kernel_options,
                        setting_options, as_json)
        return
    args = [sys.executable, "-m", "blobmount", "mount", str(where), "--foreground",
            "--log-file", str(log_path), "--user", variables["user"]] + ["-v"] * verbose
    if mount_options:
        args += ["-o", ",".join(mount_options)]
    if config_path:
        args += ["--config", str(Path(config_path).absolute())]
    pid, note = _start_daemon(args, log_path)
    click.echo(_mounted(where, pid, note, as_json))


def _mounted(where: Path, pid: int, note: str, as_json: bool) -> str:
    """What `mount` prints once the mount is live."""
    if as_json:
        return json.dumps({"mountpoint": str(where), "pid": pid, "note": note}, sort_keys=True)
    return note


@cli.command("check")
@click.argument("mountpoint", type=click.Path(), required=False)
@click.option("--config", "config_file", metavar="FILE",
              help="Config file [default: as for mount].")
@click.option("--user", metavar="NAME", help="The config's {user} [default: as for mount].")
@click.option("--strict", is_flag=True,
              help="Count a config that holds secrets and that others can read as a failure.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def check_command(mountpoint: str | None, config_file: str | None, user: str | None,
                  strict: bool, as_json: bool) -> None:
    """Check everything `mount` would, without mounting or writing to any container:
    the config, MOUNTPOINT (if given), each entry's account, credential, container and
    prefix, each cache folder, AzCopy. One line each, ✓ or why not; exit 1 if any fails."""
    _dry_run(config_file, mountpoint, user, strict, as_json, None)


def _dry_run(config_file: str | None, mountpoint: str | None, user: str | None,
             strict: bool, as_json: bool, mount_options: Callable[[], object] | None) -> None:
    from .preflight import check

    report = check(config_file, mountpoint, user=user, strict=strict,
                   mount_options=mount_options)
    click.echo(json.dumps(report.as_json(), indent=2, sort_keys=True) if as_json
               else report.text())
    if not report.ok:
        sys.exit(1)


def _mount_options(given: tuple[str, ...]) -> tuple[list[str], dict[str, int]]:
    """The -o options, checked: (kernel options, settings they override).

    uid, gid and umask are ours, not the kernel's: they set what the files show.
    """
    options = [part.strip() for text in given for part in text.split(",") if part.strip()]
    kernel: list[str] = []
    settings: dict[str, int] = {}
    for option in options:
        if option in helper.KERNEL:
            kernel.append(option)
            continue
        try:
            setting = setting_option(option)
        except ValueError as exc:
            raise BlobmountError(f"mount option {option!r}: {exc}") from None
        if setting is None:
            raise BlobmountError(f"unknown mount option {option!r}; blobmount takes"
                                 f" {', '.join(sorted(helper.KERNEL))}, uid=N, gid=N,"
                                 " umask=OCTAL")
        settings[setting[0]] = setting[1]
    return list(dict.fromkeys(kernel)), settings


def _warn_readable_secrets(config: Config | None, *, strict: bool = False) -> None:
    from .preflight import readable_secrets

    problem = readable_secrets(config)
    if problem is None:
        return
    if strict:
        raise BlobmountError(f"{problem} (refused: --strict)")
    click.echo(f"blobmount: warning: {problem}", err=True)


def _refuse_loose_caches(config: Config | None) -> None:
    """--strict: a cache folder other users can read is refused, not tightened."""
    from .daemon import embedded_cache_dir

    folders = ([config.cache_dir, *(entry.cache_dir for entry in config.mounts)]
               if config is not None else [embedded_cache_dir()])
    for folder in dict.fromkeys(folders):
        try:
            mode = stat.S_IMODE(folder.stat().st_mode)
        except FileNotFoundError:
            continue  # made private by the daemon
        if mode & 0o077:
            raise BlobmountError(
                f"cache folder {folder} is readable by other users (mode {mode:04o}):"
                f" `chmod -R go= {folder}`, or mount without --strict, which tightens it"
                " (refused: --strict)")


def _run_foreground(config: Config | None, mountpoint: Path, verbose: int, log_path: Path,
                    ready_fd: int | None, kernel_options: list[str],
                    setting_options: dict[str, int], as_json: bool = False) -> None:
    from .daemon import run_daemon
    from .log import setup_logging

    setup_logging(verbose, log_path, stderr=ready_fd is None)
    if ready_fd is None:
        run_daemon(config, mountpoint,
                   lambda note: click.echo(_mounted(mountpoint, os.getpid(), note, as_json)),
                   kernel_options, setting_options)
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
        run_daemon(config, mountpoint, ready, kernel_options, setting_options)
    except BlobmountError as exc:
        if not channel.closed:
            channel.write(f"error {exc}\n")
            channel.close()
        raise


def _start_daemon(args: list[str], log_path: Path) -> tuple[int, str]:
    """Start the daemon and wait for its word: its pid and the note to print, or a
    BlobmountError."""
    try:
        return _wait_for_daemon(args, log_path)
    except KeyboardInterrupt:
        # Our end of the channel is closed now: the daemon sees that, and unmounts.
        raise BlobmountError(f"interrupted: the daemon gives up the mount; see {log_path}"
                             ) from None


def _wait_for_daemon(args: list[str], log_path: Path) -> tuple[int, str]:
    from .log import make_log_private

    # Tightened by the daemon's setup_logging, which logs it.
    make_log_private(log_path, tighten=False)
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
        return daemon.pid, text
    code = daemon.wait()
    if status == "error":
        raise BlobmountError(text)
    raise BlobmountError(
        f"the daemon exited (code {code}) before the mount was ready; see {log_path}")


_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _expiry(text: str) -> dt.datetime:
    """When a SAS expires: a lifetime from now (90s, 30m, 12h, 7d, 2w) or a time
    (2030-01-01, 2030-01-01T12:00Z; UTC unless it says otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower())
    now = dt.datetime.now(dt.UTC)
    if match:
        when = now + dt.timedelta(seconds=int(match[1]) * _SECONDS[match[2]])
    else:
        try:
            when = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise BlobmountError(f"--expiry {text!r}: give a lifetime such as 30m, 12h or 7d,"
                                 " or a time such as 2030-01-01T12:00Z") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    if when <= now:
        raise BlobmountError(f"--expiry {text!r} is not in the future")
    return when


@cli.command()
@click.option("--config", "config_file", metavar="FILE",
              help="Config file whose account holds the key [default: as for mount].")
@click.option("--account", "account_name", metavar="NAME",
              help="The account: its name under accounts: or its storage account name"
                   " [default: the config's only account].")
@click.option("--container", required=True, metavar="NAME", help="The container.")
@click.option("--permissions", default="rl", show_default=True,
              help="Letters: r read, l list, w write, c create, a add, d delete, ...")
@click.option("--expiry", default="1h", show_default=True,
              help="Valid for (30m, 12h, 7d) or until (2030-01-01T12:00Z).")
@click.option("--prefix", default="", metavar="P",
              help="Only this folder: a directory SAS, which Azure honours on accounts with"
                   " a hierarchical namespace (ADLS Gen2) only.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the token with its account, container, permissions and expiry.")
def sas(config_file: str | None, account_name: str | None, container: str, permissions: str,
        expiry: str, prefix: str, as_json: bool) -> None:
    """Print a SAS token for a container, signed with an account key from the config.

    Only the token is printed, without a leading '?' (as `az storage container
    generate-sas` prints it); a config's sas_token takes it with or without one.
    """
    from .azure import mint_sas

    config_path = find_config(config_file)
    if config_path is None:
        raise BlobmountError("no config file: give --config FILE (its account's key signs"
                             " the SAS)")
    accounts = load_config(config_path).accounts
    if account_name is None:
        if len(accounts) != 1:
            raise BlobmountError(f"{config_path} has {len(accounts)} accounts: name one with"
                                 f" --account ({', '.join(accounts) or 'none'})")
        account = next(iter(accounts.values()))
    else:
        found = [a for key, a in accounts.items()
                 if account_name in (key, a.account_name)]
        if not found:
            raise BlobmountError(f"{config_path} has no account {account_name!r}"
                                 f" (accounts: {', '.join(accounts) or 'none'})")
        account = found[0]
    try:
        name = container_name(container)
        until = _expiry(expiry)
        token = mint_sas(account, name, permissions=permissions, expiry=until, prefix=prefix)
    except ValueError as exc:
        raise BlobmountError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"token": token, "account": account.account_name,
                               "container": name, "prefix": prefix,
                               "permissions": permissions,
                               "expiry": until.isoformat(timespec="seconds")},
                              indent=2, sort_keys=True))
        return
    click.echo(token)


def _invoke(args: list[str]) -> None:
    """Run the CLI in this process for the mount helper; usage errors as BlobmountError.

    Quiet, as mount(8) is, unless asked for -v.
    """
    quiet = "-v" not in args
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            cli.main(args, prog_name="blobmount", standalone_mode=False)
    except click.ClickException as exc:
        raise BlobmountError(exc.format_message()) from None


# unmount, sync, status, prefetch, cache ls/evict/clear, stats (commands.py)
add_to(cli)


def main() -> None:
    """Entry point: run the CLI, turning a BlobmountError into one line and exit 1.

    Started as mount(8)'s helper (mount.fuse.blobmount, or `blobmount CONFIG MOUNTPOINT
    -o ...` from mount.fuse), it takes mount's arguments instead (see helper.py).
    """
    if helper.is_helper_call(sys.argv, cli.commands):
        sys.exit(helper.run(sys.argv[1:], _invoke))
    try:
        cli(prog_name="blobmount")
    except BlobmountError as exc:
        click.echo(f"blobmount: {exc}", err=True)
        sys.exit(1)
