"""The config's data model: frozen dataclasses, size units and fixed names.

The secret fields of `Account` are left out of `repr`; `register_account` hands them to
`blobmount.log.register_secret`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from blobmount.log import register_secret

from .credentials import connection_string_secrets, sas_signatures

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


EMBEDDED_SOURCE = "<embedded default>"


@dataclass(frozen=True)
class Account:
    """One storage account and how to authenticate to it.

    The secret fields are left out of `repr` so that printing a config never shows them.
    """

    name: str  # key under `accounts:` (azfuse: the storage_account name)
    account_name: str
    endpoint: str  # blob endpoint without a trailing slash
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)  # without a leading '?'
    connection_string: str | None = field(default=None, repr=False)
    # True when no key, SAS or connection string is given: use DefaultAzureCredential.
    use_identity: bool = False

    def secrets(self) -> tuple[str, ...]:
        """Every secret string this account holds, for redaction."""
        found: list[str | None] = [self.account_key, self.sas_token, self.connection_string]
        if self.sas_token:
            found.extend(sas_signatures(self.sas_token))
        if self.connection_string:
            found.extend(connection_string_secrets(self.connection_string))
        return unique(found)

    def may_write(self) -> bool:
        """False when the account's only credential is a SAS that grants neither write
        nor create (`sp=rl`): its entries are read-only unless the config says otherwise."""
        if self.account_key or self.connection_string or not self.sas_token:
            return True
        granted = parse_qs(self.sas_token).get("sp")
        return granted is None or bool(set(granted[0]) & set("wc"))


@dataclass(frozen=True)
class MountEntry:
    """One top-level folder of the mount and the blobs it shows."""

    local: str  # '/'-separated path under the mount point, no leading/trailing '/'
    account: Account
    container: str
    prefix: str  # '' or 'some/path/' (exactly one trailing '/', none leading)
    cache_dir: Path  # absolute
    read_only: bool = False
    upload: str = "sync"  # "sync" | "async"
    # Limits of this entry's cache folder (the entry's own keys, else the top-level ones);
    # None: no limit.
    cache_max_bytes: int | None = None
    cache_max_age: float | None = None  # seconds since last use
    # Drop a written file's cached copy once it is uploaded (default: cache under /dev/shm).
    drop_after_upload: bool = False


@dataclass(frozen=True)
class Settings:
    """Tunables; the native format takes them as top-level keys of the same names."""

    listing_ttl: float = 30.0  # seconds a folder listing is trusted
    # Larger blobs move through AzCopy. Its jobs cost about 2 s whatever the size, and
    # the SDK moved 64 MiB from Azurite in 0.23 s where AzCopy took 2.04 s
    # (benchmarks/run.py --quick), so only big blobs are worth a job. A download by the
    # SDK can also be read while it runs: a cold `cat` of 1 GiB took 3.6 s that way and
    # 8.2 s by an AzCopy job (benchmarks/run.py --only cold_read).
    sdk_download_max: int = 1024 * MiB
    sdk_upload_max: int = 256 * MiB
    # Readers of blobs larger than this get a sparse copy that holds the blocks read
    # so far (blocks.py): open() returns at once and a read fetches only what it needs;
    # smaller blobs come whole. Writers still get the whole file. As large as
    # sdk_download_max: up to it, a whole download by the SDK streams faster from
    # Azurite than 4 MiB ranges with their MD5 (benchmarks/blocks.py), and is read
    # while it comes; above it, the whole file used to come by AzCopy before open().
    block_read_min: int = 1024 * MiB
    # Opening a small cold file fetches this many of the next small files of its folder
    # in the background (a program walking a folder reads them next); 0 turns it off.
    read_ahead_files: int = 16
    # KiB the kernel reads ahead of a program reading a file through the mount, in one
    # request (the kernel's default is 128). A cold read of 256 MiB cost the daemon
    # 1.0 s of CPU at 128 KiB and 0.66 s at 512 KiB or more, the same at 1024 and
    # 4096 (benchmarks/run.py --only cold_read). Set through sysfs, so only a daemon
    # run as root can; 0 leaves the kernel's default.
    read_ahead_kb: int = 1024
    # Extended attributes (user.blob.*, user.meta.*, user.tag.*). Off (the default),
    # the kernel stops asking at all: `ls -l` of 2,000 files took 0.27 s warm with
    # them on (a round trip per file for security.* and ACLs) and 0.024 s off
    # (benchmarks/run.py --quick --only listing).
    xattrs: bool = False
    # Async uploads of files closed within this many seconds of each other go together.
    upload_batch_window: float = 0.2
    max_parallel_transfers: int = 8
    # Seconds a call waits for the account to connect, or to send the next bytes of an
    # answer, before that try fails; a call gets three tries (azure.RETRIES), so one
    # that needs an account that does not answer fails (EIO) after about 32 s.
    remote_timeout: float = 10.0
    # Defaults for every entry's cache folder: evict clean copies when the folder holds
    # more than cache_max_bytes, down to cache_low_watermark of it, least recently used
    # first; and those unused for cache_max_age seconds. None: no limit.
    cache_max_bytes: int | None = None
    cache_max_age: float | None = None
    cache_low_watermark: float = 0.8
    # Seconds between syncs of the cache's file systems while downloaded copies (never
    # fsynced on their own) wait for one: what a crash of the machine can make the next
    # mount download again (copysync.py).
    cache_sync_interval: float = 30.0
    # Owner and permission bits of what the mount shows for blobs that keep none in
    # their metadata: files 0666 & ~umask, folders 0777 & ~umask (0444 and 0555 at most
    # on read-only entries). None: the daemon's own uid/gid. The kernel enforces what is
    # shown (default_permissions). "kept": chmod, chown and new files keep modes and
    # owners as blob metadata (posix.py); "fixed": every blob shows these settings.
    uid: int | None = None
    gid: int | None = None
    umask: int = 0o022
    permissions: str = "kept"
    # Where the Prometheus endpoint (/metrics) listens, as (host, port); None: nowhere.
    metrics_address: tuple[str, int] | None = None


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs from the config file."""

    source: str  # the file's path, or EMBEDDED_SOURCE
    cache_dir: Path  # absolute
    accounts: Mapping[str, Account]
    mounts: tuple[MountEntry, ...]
    settings: Settings

    def secrets(self) -> tuple[str, ...]:
        """Every secret string of every account, for redaction."""
        accounts = [*self.accounts.values(), *(m.account for m in self.mounts)]
        return unique(secret for account in accounts for secret in account.secrets())

    def with_settings(self, **changes: Any) -> Config:
        """This config with some settings changed (mount options override the file)."""
        return replace(self, settings=replace(self.settings, **changes))


def register_account(account: Account) -> Account:
    """Register the account's secrets for redaction; returns it for chaining."""
    for secret in account.secrets():
        register_secret(secret)
    return account


def unique(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
