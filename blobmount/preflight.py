"""`blobmount check` (and `mount --dry-run`): what a mount would check, without mounting.

Each check is the one the mount itself makes, called here on its own: the config is
loaded by `load_config`, the mount point judged by `daemon.check_mountpoint`, each
entry's container listed by `Remote.check` (so an account that cannot be reached, a
credential it refuses and a missing container read as at mount), each cache folder
taken for a moment with `daemon.cache_lock`. Beyond the mount's own checks, it lists
each prefix, looks at each cache folder's file system and free space, and runs
AzCopy. Nothing is written to any container; locally, only a probe file in each cache
folder that exists, removed at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import inventory
from .azure import Remote
from .config import Account, Config, MountEntry, default_variables, find_config, load_config
from .daemon import (
    EMBEDDED_CONTAINER,
    cache_lock,
    check_mountpoint,
    data_dir,
    embedded_cache_dir,
)
from .errors import BlobmountError, ToolNotFound
from .metrics import check_address
from .progress import human_bytes
from .tools import find_azcopy, find_azurite
from .versions import azcopy_version

OK = "ok"
WARNING = "warning"  # the mount would go ahead, with less than it could
FAILED = "failed"
MARKS = {OK: "✓", WARNING: "!", FAILED: "✗"}
#: Entries are checked side by side, at most this many at once.
PARALLEL_CHECKS = 8


@dataclass
class Finding:
    """One checked thing: what it is, how it went, and why."""

    subject: str  # "config", "mount point /mnt/x", "entry 'd'", "cache /var/cache/x", ...
    state: str
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{MARKS[self.state]} {self.subject}" + (f": {self.detail}" if self.detail else "")

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "state": self.state, "detail": self.detail,
                **self.facts}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(finding.state != FAILED for finding in self.findings)

    def add(self, subject: str, state: str, detail: str = "", **facts: Any) -> Finding:
        finding = Finding(subject, state, detail, facts)
        self.findings.append(finding)
        return finding

    def text(self) -> str:
        return "\n".join(finding.line() for finding in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [finding.as_json() for finding in self.findings]}


def readable_secrets(config: Config | None) -> str | None:
    """What is wrong when the config file itself holds secrets that others can read."""
    if config is None or not config.secrets() or not os.path.isfile(config.source):
        return None
    # Secrets read from files (account_key_file: ...) are not in the config itself.
    with open(config.source, encoding="utf-8", errors="replace") as source:
        text = source.read()
    if not any(secret in text for secret in config.secrets()):
        return None
    if os.stat(config.source).st_mode & 0o077:
        return (f"{config.source} holds secrets and others can read it;"
                f" run `chmod 600 {config.source}`")
    return None


def check(config_file: str | None, mountpoint: str | None, *, user: str | None = None,
          strict: bool = False,
          mount_options: Callable[[], object] | None = None) -> Report:
    """Everything `blobmount mount` would check for this config and mount point.

    `mount_options` parses the -o options (raising BlobmountError), when there are any.
    """
    report = Report()
    config = _check_config(report, config_file, user, strict)
    if mount_options is not None:
        _check(report, "mount options", mount_options)
    if mountpoint is not None:
        def empty_folder() -> str:
            check_mountpoint(mountpoint)
            return "an empty folder"

        _check(report, f"mount point {os.path.abspath(mountpoint)}", empty_folder)
    if config is not None:
        _check_entries(report, config)
        # The daemon locks cache_dir (which holds the store); entries keep copies in theirs.
        folders = [(config.cache_dir, True)] + [(entry.cache_dir, False)
                                                for entry in config.mounts]
        for folder, locked in _unique(folders):
            _check_folder(report, "cache", folder, locked=locked)
        if config.settings.metrics_address is not None:
            host, port = config.settings.metrics_address
            _check(report, f"metrics_address {host}:{port}", partial(check_address, host, port))
    elif not _config_failed(report):
        _check_embedded(report)
    _check_azcopy(report)
    return report


def _unique(folders: list[tuple[Path, bool]]) -> list[tuple[Path, bool]]:
    """Each folder once, locked if any of its mentions is."""
    seen: dict[Path, bool] = {}
    for folder, locked in folders:
        seen[folder] = seen.get(folder, False) or locked
    return list(seen.items())


def _check(report: Report, subject: str, probe: Callable[[], object]) -> bool:
    """Run `probe`: its text (if a string) as the detail, or its error as the reason."""
    try:
        result = probe()
    except BlobmountError as exc:
        report.add(subject, FAILED, str(exc))
        return False
    report.add(subject, OK, result if isinstance(result, str) else "")
    return True


def _config_failed(report: Report) -> bool:
    return any(f.subject == "config" and f.state == FAILED for f in report.findings)


def _check_config(report: Report, config_file: str | None, user: str | None,
                  strict: bool) -> Config | None:
    try:
        path = find_config(config_file)
        if path is None:
            report.add("config", OK, "none found: the embedded Azurite default",
                       source=None)
            return None
        config = load_config(path, default_variables(user))
    except BlobmountError as exc:
        report.add("config", FAILED, str(exc))
        return None
    count = len(config.mounts)
    report.add("config", OK, f"{config.source}: {count} {'entry' if count == 1 else 'entries'},"
               f" {len(config.accounts)} account{'' if len(config.accounts) == 1 else 's'}",
               source=config.source)
    problem = readable_secrets(config)
    if problem:
        if strict:
            report.add("config permissions", FAILED, f"{problem} (refused: --strict)")
        else:
            report.add("config permissions", WARNING, problem)
    return config


def describe_entry(entry: MountEntry) -> str:
    """`d/ -> account/container/prefix (read-write, upload sync)`, as status shows it."""
    mode = "read-only" if entry.read_only else f"read-write, upload {entry.upload}"
    return (f"{entry.local}/ -> {entry.account.account_name}/{entry.container}/"
            f"{entry.prefix} ({mode})")


def _sas_may_write(account: Account) -> bool | None:
    """Whether the account's only credential, a SAS, grants write or create; None when
    its credential is no SAS (a key may write, an identity may or may not)."""
    if account.account_key or account.connection_string or not account.sas_token:
        return None
    return account.may_write()


def _probe_entry(entry: MountEntry, timeout: float) -> tuple[str, str]:
    """(state, detail) of one entry: its container lists, then its prefix does."""
    try:
        remote = Remote(entry.account, entry.container, timeout=timeout)
    except ImportError as exc:
        return FAILED, (f"{exc.name or exc}: not installed (an account with no key or SAS"
                        " signs in with azure-identity: pip install 'blobmount[identity]')")
    try:
        remote.check()
        if entry.prefix:
            next(remote.list_pages(entry.prefix, page_size=1), None)
    except BlobmountError as exc:
        return FAILED, str(exc)
    finally:
        remote.close()
    return OK, ""


def _check_entries(report: Report, config: Config) -> None:
    timeout = config.settings.remote_timeout
    with ThreadPoolExecutor(min(PARALLEL_CHECKS, max(1, len(config.mounts)))) as pool:
        results = list(pool.map(lambda entry: _probe_entry(entry, timeout), config.mounts))
    for entry, (state, detail) in zip(config.mounts, results, strict=True):
        sas_write = _sas_may_write(entry.account)
        notes = [detail] if detail else []
        if sas_write is False:
            notes.append("its SAS grants neither write nor create")
            if not entry.read_only and state == OK:
                state = WARNING
                notes[-1] += ": read_only is false, so every upload will be refused (EACCES)"
        elif sas_write:
            notes.append("its SAS may write")
        if entry.account.use_identity:
            notes.append("signed in by identity: whether it may write shows at the first write")
        report.add(f"entry {entry.local!r}", state,
                   "; ".join([describe_entry(entry)] + notes),
                   local=entry.local, account=entry.account.account_name,
                   container=entry.container, prefix=entry.prefix,
                   read_only=entry.read_only, sas_may_write=sas_write)


def _filesystem(path: Path) -> str:
    """The type of the file system `path` is on (the deepest mount point holding it)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    with open(inventory.MOUNTS, encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            fields = line.split(" ")
            if len(fields) < 3:
                continue
            where = inventory.unescape(fields[1])
            inside = real == where or real.startswith(where.rstrip("/") + "/")
            if inside and len(where) >= len(best):
                best, kind = where, fields[2]
    return kind


def _check_folder(report: Report, what: str, folder: Path, *, locked: bool) -> None:
    """A folder the daemon writes to: writable (or makeable), on which file system, with
    how much free space; `locked` ones also not held by a running daemon."""
    subject = f"{what} folder {folder}"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        report.add(subject, FAILED, f"{existing} is not a folder", path=str(folder))
        return
    try:
        if existing == folder:
            # The daemon's own lock, taken and let go at once: a daemon holding it is named.
            if locked:
                with cache_lock(folder, f"{what} folder"):
                    pass
            with tempfile.TemporaryFile(dir=folder, prefix=".blobmount-check-"):
                pass
            writable = "writable"
        elif os.access(existing, os.W_OK | os.X_OK):
            writable = f"to be made (in {existing}, writable)"
        else:
            raise PermissionError(f"cannot make it: {existing} is not writable")
    except BlobmountError as exc:
        report.add(subject, FAILED, str(exc), path=str(folder))
        return
    except OSError as exc:
        report.add(subject, FAILED, f"not writable: {exc.strerror or exc}", path=str(folder))
        return
    stats = os.statvfs(existing)
    free = stats.f_bavail * stats.f_frsize
    kind = _filesystem(existing)
    report.add(subject, OK, f"{writable}; {kind}, {human_bytes(free)} free", path=str(folder),
               filesystem=kind, free_bytes=free)


def _check_embedded(report: Report) -> None:
    """The embedded default: its Azurite is found, and its folders can be used. (Azurite
    itself starts only with the mount, which makes the container.)"""
    try:
        report.add("Azurite", OK, f"{find_azurite()} (started by the mount, which makes"
                   f" the container {EMBEDDED_CONTAINER!r})")
    except ToolNotFound as exc:
        report.add("Azurite", FAILED, str(exc))
    _check_folder(report, "data", data_dir(), locked=True)
    _check_folder(report, "cache", embedded_cache_dir(), locked=False)


def _check_azcopy(report: Report) -> None:
    """AzCopy is found and runs. Missing, it is no failure: the daemon then moves every
    file through the SDK (as it does for an identity-only account anyway)."""
    try:
        binary = find_azcopy()
    except ToolNotFound as exc:
        report.add("AzCopy", WARNING, f"{exc}; every transfer goes through the SDK")
        return
    try:
        version = azcopy_version(binary)
    except ToolNotFound as exc:
        report.add("AzCopy", FAILED, str(exc), path=str(binary))
        return
    report.add("AzCopy", OK, f"{version} ({binary})", path=str(binary), version=version)
