"""The config file: YAML in, frozen dataclasses out, every mistake a one-line `ConfigError`.

Two formats are read. blobmount's own is a mapping (``accounts:``, ``mounts:`` and a few
settings); azfuse's is a list of ``{local, remote, cache, storage_account}`` entries
plus a folder of per-account YAML files, read as it is so azfuse users can switch
without rewriting anything. Both end as the same `Config`.

Errors name the file, the key path (``mounts[1].container``) and what is wrong, and
never a secret: every account key, SAS token and connection string is handed to
`blobmount.log.register_secret` the moment it is read, before it is even validated.

This is layer 0: it imports only the standard library, PyYAML and our layer-0 modules.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import logging
import math
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from blobmount.errors import ConfigError
from blobmount.log import register_secret

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_ENDPOINT",
    "AZURITE_KEY",
    "EMBEDDED_SOURCE",
    "GiB",
    "KiB",
    "MiB",
    "TiB",
    "Account",
    "Config",
    "MountEntry",
    "Settings",
    "container_name",
    "default_cache_dir",
    "default_variables",
    "embedded_config",
    "find_config",
    "load_config",
    "parse_address",
    "parse_id",
    "parse_size",
    "parse_umask",
    "setting_option",
    "xdg_dir",
]

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published well-known key: not a secret, but registered like one anyway.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Where `UseDevelopmentStorage=true` points, as the Azure SDKs define it.
AZURITE_ENDPOINT = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"
EMBEDDED_SOURCE = "<embedded default>"

# Module-level so tests can point them somewhere harmless.
_SYSTEM_CONFIG = Path("/etc/blobmount/config.yaml")
_SYSTEM_CACHE = Path("/var/cache/blobmount")
_AZFUSE_ACCOUNT_FOLDER = "./aux_data/storage_account"
# Memory-backed: a cache folder here drops written files' copies once they are uploaded.
_SHM = Path("/dev/shm")

# Azure's naming rules; checking them here turns a later HTTP 400 into a clear message.
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_SPECIAL_CONTAINERS = ("$root", "$web")
_MAX_BLOB_NAME = 1024
_MAX_NAME_BYTES = 255
_UPLOAD_MODES = ("sync", "async")
_PERMISSION_MODES = ("kept", "fixed")  # posix.PERMISSION_MODES (config is layer 0)

# Placeholders such as {user}: one config serves many users. Only these keys take them.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_TEMPLATED_KEYS = frozenset({"cache_dir", "local", "remote", "url", "container", "cache"})

# (uid_t)-1 means "leave unchanged" to the kernel, so it cannot be an owner.
_MAX_ID = 2**32 - 2
_DIGITS = re.compile(r"\s*\d+\s*")
_OCTAL = re.compile(r"\s*(?:0o)?([0-7]+)\s*", re.IGNORECASE)

_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB, "t": TiB, "tib": TiB,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}  # fmt: skip


# --------------------------------------------------------------------------- dataclasses


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
            found.extend(_sas_signatures(self.sas_token))
        if self.connection_string:
            found.extend(_connection_string_secrets(self.connection_string))
        return _unique(found)

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
    # answer, before that try fails; a call gets three tries (remote.RETRIES), so one
    # that needs an account that does not answer fails (EIO) after about 32 s.
    remote_timeout: float = 10.0
    # Defaults for every entry's cache folder: evict clean copies when the folder holds
    # more than cache_max_bytes, down to cache_low_watermark of it, least recently used
    # first; and those unused for cache_max_age seconds. None: no limit.
    cache_max_bytes: int | None = None
    cache_max_age: float | None = None
    cache_low_watermark: float = 0.8
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
        return _unique(secret for account in accounts for secret in account.secrets())

    def with_settings(self, **changes: object) -> Config:
        """This config with some settings changed (mount options override the file)."""
        return replace(self, settings=replace(self.settings, **changes))


# --------------------------------------------------------------------------- public API


def default_cache_dir() -> Path:
    """The cache folder when the config names none: system-wide for root, per user otherwise.

    Under systemd, a unit's `CacheDirectory=` (which sets $CACHE_DIRECTORY) wins, so
    each instance of a template unit gets a folder of its own.
    """
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if os.path.isabs(systemd):
        return Path(systemd)
    if os.geteuid() == 0:
        return _SYSTEM_CACHE
    return xdg_dir("XDG_CACHE_HOME", ".cache") / "blobmount"


def find_config(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Which config file to use, or None when there is none and the embedded default applies.

    Order: `explicit` (--config), $BLOBMOUNT_CONFIG, the user's (root: the system's)
    config.yaml if it exists, then azfuse's $AZFUSE_CLOUD_FUSE_CONFIG_FILE. A file named
    explicitly or by a variable must exist: silently falling through to another config
    would mount the wrong thing.
    """
    if explicit is not None:
        return _must_exist(Path(explicit).expanduser())
    named = os.environ.get("BLOBMOUNT_CONFIG")
    if named:
        return _must_exist(Path(named).expanduser())
    user_file = _user_config_file()
    if user_file.is_file():
        return user_file
    azfuse = os.environ.get("AZFUSE_CLOUD_FUSE_CONFIG_FILE")
    if azfuse:
        return _must_exist(Path(azfuse).expanduser())
    return None


def default_variables(user: str | None = None) -> dict[str, str]:
    """The values of the config's placeholders: {user} is `user` if given, else
    $BLOBMOUNT_USER, else the name of the user running blobmount."""
    if not user:
        user = os.environ.get("BLOBMOUNT_USER") or _invoking_user()
    return {"user": user}


def load_config(
    path: str | os.PathLike[str], variables: Mapping[str, str] | None = None
) -> Config:
    """Read a config file; a top-level list is azfuse's format, a mapping is ours.

    `variables` fill the placeholders (`remote: users/{user}`) of the keys that take
    them (local, remote, url, container, cache, cache_dir); None means
    `default_variables()`. A placeholder without a value is a ConfigError.
    """
    source = os.fspath(path)
    data = _read_yaml(Path(source), source)
    values = dict(default_variables() if variables is None else variables)
    if isinstance(data, list):
        return _load_azfuse(data, source, values)
    if isinstance(data, dict):
        return _load_native(data, source, values)
    raise ConfigError(
        source,
        "",
        f"expected a mapping (blobmount format) or a list (azfuse format), got {_kind(data)}",
    )


def embedded_config(endpoint: str, cache_dir: Path | None = None) -> Config:
    """The config used when no file exists anywhere: one Azurite container, `blobmount`.

    It lets `blobmount mount DIR` work out of the box against a local Azurite.
    """
    try:
        endpoint = _endpoint(endpoint)
    except ValueError as exc:
        raise ConfigError(EMBEDDED_SOURCE, "endpoint", str(exc)) from None
    root = _absolute(cache_dir) if cache_dir is not None else default_cache_dir()
    account = _register(
        Account(
            name="local",
            account_name=AZURITE_ACCOUNT,
            endpoint=endpoint,
            account_key=AZURITE_KEY,
        )
    )
    mount = MountEntry(
        local="blobmount",
        account=account,
        container="blobmount",
        prefix="",
        cache_dir=root / "blobmount",
    )
    return Config(
        source=EMBEDDED_SOURCE,
        cache_dir=root,
        accounts=MappingProxyType({"local": account}),
        mounts=(mount,),
        settings=Settings(),
    )


def container_name(value: str) -> str:
    """`value` if it is a valid container name; else a ValueError saying what is valid."""
    return _container(value)


def parse_size(value: int | str) -> int:
    """A byte count from an int or a string such as "32MiB", "1.5GiB", "100MB" or "4096".

    KiB/MiB/GiB/TiB and bare K/M/G/T are powers of 1024; KB/MB/GB/TB powers of 1000.
    Raises ValueError with a message fit for the user.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size such as 32MiB or a byte count, got {_kind(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value
    match = _SIZE.fullmatch(value)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(
            f"bad size {value!r}: give bytes or a number with a unit: "
            "KiB, MiB, GiB, TiB (1024-based) or KB, MB, GB, TB (1000-based)"
        )
    return int(float(match.group(1)) * unit)


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT ("127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464"; port 0: any free
    one) as (host, port); ValueError fit for the user."""
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {_kind(value)}")
    host, colon, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not _DIGITS.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {value!r}")
    return host, int(port)


def parse_id(value: int | str) -> int:
    """A uid or gid from an int or a string of digits; ValueError fit for the user."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        plain = isinstance(value, (int, str)) and not isinstance(value, bool)
        shown = repr(value) if plain else _kind(value)
        raise ValueError(f"expected a user or group id (0 to {_MAX_ID}), got {shown}")
    return value


def parse_umask(value: int | str) -> int:
    """A umask from an int or an octal string ("022", "0027", "0o077").

    A string is always octal, as mount(8) and libfuse read `umask=`; an int is taken as
    YAML read it (YAML reads `022` as octal, but `22` as twenty-two).
    """
    if isinstance(value, str):
        match = _OCTAL.fullmatch(value)
        if not match:
            raise ValueError(f"expected octal digits such as 022 or 0027, got {value!r}")
        value = int(match.group(1), 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected octal digits such as 022 or 0027, got {_kind(value)}")
    if not 0 <= value <= 0o777:
        raise ValueError(f"must be from 0 to 0777 (octal), got {value:#o}")
    return value


_OPTION_SETTINGS: dict[str, Callable[[str], int]] = {
    "uid": parse_id, "gid": parse_id, "umask": parse_umask,
}


def setting_option(option: str) -> tuple[str, int] | None:
    """(setting, value) for a mount option that sets one (`uid=N`, `gid=N`,
    `umask=OCTAL`); None for any other option; ValueError for a bad value."""
    name, has_value, value = option.partition("=")
    parse = _OPTION_SETTINGS.get(name)
    if parse is None:
        return None
    if not has_value:
        raise ValueError(f"needs a value, such as {name}={'027' if name == 'umask' else 1000}")
    return name, parse(value)


# --------------------------------------------------------------------------- reading YAML


def _read_yaml(path: Path, source: str) -> object:
    """Parse one YAML file, turning every way it can fail into a ConfigError.

    A YAML error's full text quotes the offending line, which may hold a key, so only
    the problem and the position go into the message.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(source, "", "is a folder, not a file") from None
    except PermissionError:
        raise ConfigError(source, "", "cannot read: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, "", _yaml_problem(exc)) from None
    except yaml.YAMLError:
        raise ConfigError(source, "", "YAML syntax error") from None
    if data is None:
        raise ConfigError(source, "", "empty file")
    return data


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"YAML syntax error{where}: {exc.problem or exc.context or 'invalid YAML'}"


_T = TypeVar("_T")
_V = TypeVar("_V")


class _Section:
    """A YAML mapping being read, that knows its file and key path so errors can say where.

    `strict` sections reject unknown keys (a typo must not silently mean "default");
    azfuse's files are read leniently, since azfuse itself ignores extra keys.
    """

    def __init__(
        self,
        source: str,
        path: str,
        data: object,
        known: Iterable[str],
        *,
        strict: bool = True,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, path, f"expected a mapping, got {_kind(data)}")
        self.source = source
        self.path = path
        self.data: dict[object, object] = data
        # Placeholders are filled in the keys that take them; None: this section has none.
        self.variables = variables
        known = tuple(known)
        for key in data:
            if key in known:
                continue
            if strict:
                raise self.error(str(key), f"unknown key{_suggest(str(key), known, 'known keys')}")
            log.warning("%s: %s: unknown key, ignored", source, self.where(str(key)))

    def where(self, key: str) -> str:
        return _join(self.path, key)

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.where(key), problem)

    def has(self, key: str) -> bool:
        """Whether `key` is given; null counts as not given."""
        return self.data.get(key) is not None

    def string(self, key: str) -> str | None:
        """The string at `key`, or None when absent.

        Numbers are not turned into strings: YAML reads `remote: 010` as 8.
        """
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_kind(value)}")
        if value is not None and self.variables is not None and key in _TEMPLATED_KEYS:
            value = self.checked(key, lambda text: _fill(text, self.variables), value)
        return value

    def required(self, key: str, missing: str = "missing") -> str:
        """The string at `key`; `missing` is the problem reported when it is absent."""
        value = self.string(key)
        if value is None:
            raise self.error(key, missing)
        return value

    def secret(self, key: str) -> str | None:
        """Like `string`, but registers the value for redaction before looking at it."""
        value = self.data.get(key)
        if isinstance(value, str):
            register_secret(value)
            if not value.strip():
                raise self.error(key, "empty")
        return self.string(key)

    def checked(self, key: str, check: Callable[[_V], _T], value: _V) -> _T:
        """`check(value)`, with its ValueError reported at `key`."""
        try:
            return check(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_kind(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key)
        if value is None:
            return default
        if value not in choices:
            listed = " or ".join(choices)
            raise self.error(key, f"must be {listed}, got {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float, inclusive: bool) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.error(key, "must be a finite number")
        if value < minimum or (value == minimum and not inclusive):
            raise self.error(key, f"must be {'>=' if inclusive else '>'} {minimum:g}, got {value}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_kind(value)}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def folder(self, key: str, *, relative_to: Path | None = None) -> Path | None:
        """An absolute folder path at `key` (with ~ expanded), or None when absent.

        A relative path is an error unless `relative_to` says what it is relative to.
        """
        value = self.string(key)
        if value is None:
            return None
        if not value.strip():
            raise self.error(key, "empty")
        expanded = Path(value).expanduser()
        if not expanded.is_absolute():
            if relative_to is None:
                raise self.error(key, f"must be an absolute path, got {value!r}")
            expanded = relative_to / expanded
        return _absolute(expanded)


# --------------------------------------------------------------------------- native format

_SECRET_KEYS = ("account_key", "sas_token", "connection_string")
_ACCOUNT_KEYS = (
    "account_name", *_SECRET_KEYS, *(f"{key}_file" for key in _SECRET_KEYS), "endpoint",
)
_MOUNT_KEYS = ("local", "account", "container", "remote", "url", "cache", "read_only", "upload",
               "cache_max_bytes", "cache_max_age", "drop_after_upload")
_SETTINGS_KEYS = tuple(f.name for f in fields(Settings))
_TOP_KEYS = ("cache_dir", "accounts", "mounts", *_SETTINGS_KEYS)


def _load_native(data: dict[object, object], source: str, variables: dict[str, str]) -> Config:
    top = _Section(source, "", data, _TOP_KEYS, variables=variables)
    cache_dir = top.folder("cache_dir") or default_cache_dir()
    settings = _read_settings(top)
    accounts = _read_accounts(top)
    raw_mounts = top.data.get("mounts")
    if raw_mounts is None:
        raise top.error("mounts", "missing: list the folders to mount")
    if not isinstance(raw_mounts, list):
        raise top.error("mounts", f"expected a list, got {_kind(raw_mounts)}")
    if not raw_mounts:
        raise top.error("mounts", "empty: list at least one folder to mount")
    mounts = []
    for index, raw in enumerate(raw_mounts):
        entry = _Section(source, _join("mounts", index), raw, _MOUNT_KEYS, variables=variables)
        mounts.append((entry, _read_native_mount(entry, accounts, cache_dir, settings)))
    _check_mount_table(mounts)
    return Config(
        source=source,
        cache_dir=cache_dir,
        accounts=MappingProxyType(accounts),
        mounts=tuple(mount for _, mount in mounts),
        settings=settings,
    )


def _read_settings(top: _Section) -> Settings:
    defaults = Settings()

    def size(key: str) -> int:
        value = top.data.get(key)
        return getattr(defaults, key) if value is None else top.checked(key, parse_size, value)

    return Settings(
        listing_ttl=top.number("listing_ttl", defaults.listing_ttl, minimum=0, inclusive=True),
        sdk_download_max=size("sdk_download_max"),
        sdk_upload_max=size("sdk_upload_max"),
        block_read_min=size("block_read_min"),
        read_ahead_files=top.integer("read_ahead_files", defaults.read_ahead_files, minimum=0),
        read_ahead_kb=top.integer("read_ahead_kb", defaults.read_ahead_kb, minimum=0),
        xattrs=top.boolean("xattrs", defaults.xattrs),
        upload_batch_window=top.number(
            "upload_batch_window", defaults.upload_batch_window, minimum=0, inclusive=True
        ),
        max_parallel_transfers=top.integer(
            "max_parallel_transfers", defaults.max_parallel_transfers, minimum=1
        ),
        remote_timeout=top.number(
            "remote_timeout", defaults.remote_timeout, minimum=0, inclusive=False
        ),
        cache_max_bytes=_cache_max_bytes(top, None),
        cache_max_age=_cache_max_age(top, None),
        cache_low_watermark=_fraction(top, "cache_low_watermark", defaults.cache_low_watermark),
        uid=_optional(top, "uid", parse_id),
        gid=_optional(top, "gid", parse_id),
        umask=_optional(top, "umask", parse_umask, defaults.umask),
        permissions=top.choice("permissions", _PERMISSION_MODES, defaults.permissions),
        metrics_address=_optional(top, "metrics_address", parse_address),
    )


def _optional(s: _Section, key: str, parse: Callable[[_V], _T],
              default: _T | None = None) -> _T | None:
    """`parse` of the value at `key`, or `default` when it is absent."""
    value = s.data.get(key)
    return default if value is None else s.checked(key, parse, value)


def _fraction(s: _Section, key: str, default: float) -> float:
    value = s.number(key, default, minimum=0, inclusive=True)
    if value > 1:
        raise s.error(key, f"must be a fraction from 0 to 1, got {value:g}")
    return value


def _cache_max_bytes(s: _Section, default: int | None) -> int | None:
    value = s.data.get("cache_max_bytes")
    if value is None:
        return default
    size = s.checked("cache_max_bytes", parse_size, value)
    if size <= 0:
        raise s.error("cache_max_bytes", "must be more than 0 bytes")
    return size


def _cache_max_age(s: _Section, default: float | None) -> float | None:
    if s.data.get("cache_max_age") is None:
        return default
    return s.number("cache_max_age", 0, minimum=0, inclusive=False)


def _under_shm(path: Path) -> bool:
    return path == _SHM or _inside(str(path), str(_SHM))


def _read_accounts(top: _Section) -> dict[str, Account]:
    raw = top.data.get("accounts")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise top.error("accounts", f"expected a mapping of names to accounts, got {_kind(raw)}")
    accounts = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name:
            raise top.error("accounts", f"account names must be non-empty strings, got {name!r}")
        section = _Section(top.source, _join("accounts", name), body, _ACCOUNT_KEYS)
        accounts[name] = _register(_read_account(name, section))
    return accounts


def _read_account(name: str, s: _Section) -> Account:
    """One `accounts:` entry: a key, a SAS, a connection string, or none (an identity).

    Each secret may instead be read from a file (`account_key_file: PATH`), so that it
    can come from a systemd credential or a Docker secret rather than the config.
    """
    given = [k for k in (*_SECRET_KEYS, *(f"{k}_file" for k in _SECRET_KEYS)) if s.has(k)]
    if len(given) > 1:
        raise s.error(given[1], f"give only one of {', '.join(given)}")
    key, sas, conn = (s.secret(k) or _secret_file(s, f"{k}_file") for k in _SECRET_KEYS)
    if conn is not None:
        return _account_from_connection_string(name, conn, s)
    return _key_account(name, s, key, sas)


def _key_account(name: str, s: _Section, key: str | None, sas: str | None) -> Account:
    """An account from account_name, an optional endpoint, and a key, a SAS, both or neither.

    Both formats share this: azfuse's account files allow a key and a SAS together.
    """
    account_name = s.checked("account_name", _account_name, s.required("account_name"))
    endpoint = s.string("endpoint")
    if endpoint is not None:
        endpoint = s.checked("endpoint", _endpoint, endpoint)
    return Account(
        name=name,
        account_name=account_name,
        endpoint=endpoint or _default_endpoint(account_name),
        account_key=s.checked("account_key", _account_key, key) if key else None,
        sas_token=s.checked("sas_token", _sas_token, sas) if sas else None,
        use_identity=not (key or sas),
    )


def _account_from_connection_string(name: str, conn: str, s: _Section) -> Account:
    """An account from a connection string; account_name/endpoint, if also given, must agree."""
    cs_name, cs_endpoint, key, sas = s.checked("connection_string", _connection_string, conn)
    account_name = s.string("account_name")
    if account_name is not None and account_name != cs_name:
        raise s.error(
            "account_name", f"{account_name!r} differs from the connection string's {cs_name!r}"
        )
    endpoint = s.string("endpoint")
    if endpoint is not None and s.checked("endpoint", _endpoint, endpoint) != cs_endpoint:
        raise s.error("endpoint", "differs from the connection string's endpoint")
    return Account(
        name=name,
        account_name=cs_name,
        endpoint=cs_endpoint,
        account_key=key,
        sas_token=sas,
        connection_string=conn,
    )


def _read_native_mount(s: _Section, accounts: dict[str, Account], cache_dir: Path,
                       settings: Settings) -> MountEntry:
    """One `mounts:` entry: where it shows (`local`) and what (`url` or account/container)."""
    local = s.checked("local", _local, s.required("local"))
    url = s.string("url")
    if url is not None:
        clash = next((k for k in ("account", "container", "remote") if k in s.data), None)
        if clash:
            raise s.error(clash, "give either url or account/container/remote, not both")
        account, container, remote = s.checked("url", lambda u: _resolve_url(u, accounts), url)
        container = s.checked("url", _container, container)
        prefix = s.checked("url", _prefix, remote)
    else:
        wanted = s.required("account", "missing: give account and container, or url")
        if wanted not in accounts:
            raise s.error(
                "account",
                f"unknown account {wanted!r}{_suggest(wanted, accounts, 'accounts defined')}",
            )
        account = accounts[wanted]
        container = s.checked("container", _container, s.required("container"))
        prefix = s.checked("remote", _prefix, s.string("remote") or "")
    cache = s.folder("cache") or _default_mount_cache(cache_dir, local)
    return MountEntry(
        local=local,
        account=account,
        container=container,
        prefix=prefix,
        cache_dir=cache,
        read_only=s.boolean("read_only", not account.may_write()),
        upload=s.choice("upload", _UPLOAD_MODES, "sync"),
        cache_max_bytes=_cache_max_bytes(s, settings.cache_max_bytes),
        cache_max_age=_cache_max_age(s, settings.cache_max_age),
        drop_after_upload=s.boolean("drop_after_upload", _under_shm(cache)),
    )


def _resolve_url(url: str, accounts: dict[str, Account]) -> tuple[Account, str, str]:
    """(account, container, prefix) of a mount's `url:`.

    A URL under a configured account's endpoint belongs to that account; an https or
    az URL belongs to the configured account of that account_name, or else to a new
    identity account added to `accounts`. Raises ValueError; the URL itself is never
    echoed, since a pasted URL may carry a SAS.
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url:
        raise ValueError("must not contain '?' or '#': give a SAS as the account's sas_token")
    by_endpoint = [a for a in accounts.values() if _under_endpoint(url, a.endpoint)]
    if by_endpoint:
        account = _only(by_endpoint, "the URL")
        rest = parts.path[len(urlsplit(account.endpoint).path.rstrip("/")) :]
        container, prefix = _split_container(rest)
        return account, container, prefix
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme == "az" and host:
        account_name, endpoint = host, _default_endpoint(host)
    elif scheme == "https" and ".blob." in host:
        account_name, endpoint = host.split(".", 1)[0], f"https://{host}"
    else:
        raise ValueError(
            "not a blob URL: expected https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX], "
            "az://ACCOUNT/CONTAINER[/PREFIX], or a configured account's endpoint and /CONTAINER"
        )
    account_name = _account_name(account_name)
    container, prefix = _split_container(parts.path)
    by_name = [a for a in accounts.values() if a.account_name == account_name]
    if by_name:
        return _only(by_name, f"account_name {account_name!r}"), container, prefix
    if account_name in accounts:
        raise ValueError(
            f"account {account_name!r} is not configured, and accounts.{account_name} "
            "is a different account; use account: and container: instead"
        )
    implicit = Account(
        name=account_name, account_name=account_name, endpoint=endpoint, use_identity=True
    )
    accounts[account_name] = implicit
    return implicit, container, prefix


def _under_endpoint(url: str, endpoint: str) -> bool:
    """Whether `url` is inside `endpoint` (scheme and host compared without case)."""
    u, e = urlsplit(url), urlsplit(endpoint)
    if (u.scheme.lower(), u.netloc.lower()) != (e.scheme.lower(), e.netloc.lower()):
        return False
    return u.path.startswith(e.path.rstrip("/") + "/")


def _split_container(path: str) -> tuple[str, str]:
    container, _, prefix = unquote(path).lstrip("/").partition("/")
    if not container:
        raise ValueError("the URL names no container")
    return container, prefix


def _only(accounts: list[Account], what: str) -> Account:
    if len(accounts) > 1:
        names = ", ".join(a.name for a in accounts)
        raise ValueError(f"{what} matches several accounts ({names}); use account: instead")
    return accounts[0]


# --------------------------------------------------------------------------- azfuse format

_AZFUSE_ENTRY_KEYS = ("local", "remote", "cache", "storage_account", "cache_lock")
_AZFUSE_ACCOUNT_KEYS = ("account_name", "account_key", "sas_token", "container_name", "endpoint")


def _load_azfuse(items: list[object], source: str, variables: dict[str, str]) -> Config:
    """azfuse's list of {local, remote, cache, storage_account}, plus its account files.

    Relative paths (the account folder, `cache:`) are relative to the current folder,
    as azfuse has them.
    """
    if not items:
        raise ConfigError(source, "", "empty list: no folders to mount")
    folder = Path(os.environ.get("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER") or _AZFUSE_ACCOUNT_FOLDER)
    cache_dir = default_cache_dir()
    by_name: dict[str, tuple[Account, str]] = {}
    mounts = []
    for index, raw in enumerate(items):
        entry = _Section(source, _join("", index), raw, _AZFUSE_ENTRY_KEYS, strict=False,
                         variables=variables)
        local = entry.checked("local", _local, entry.required("local"))
        name = entry.required("storage_account")
        if not name:
            raise entry.error("storage_account", "empty")
        if name not in by_name:
            by_name[name] = _load_azfuse_account(folder / f"{name}.yaml", name, entry)
        account, container = by_name[name]
        cache = entry.folder("cache", relative_to=Path.cwd()) or _default_mount_cache(
            cache_dir, local)
        mount = MountEntry(
            local=local,
            account=account,
            container=container,
            prefix=entry.checked("remote", _prefix, entry.string("remote") or ""),
            read_only=not account.may_write(),
            cache_dir=cache,
            # azfuse's shm_as_tmp: a copy on /dev/shm goes once it is uploaded.
            drop_after_upload=_under_shm(cache),
        )
        mounts.append((entry, mount))
    _check_mount_table(mounts)
    return Config(
        source=source,
        cache_dir=cache_dir,
        accounts=MappingProxyType({name: account for name, (account, _) in by_name.items()}),
        mounts=tuple(mount for _, mount in mounts),
        settings=Settings(),
    )


def _load_azfuse_account(path: Path, name: str, entry: _Section) -> tuple[Account, str]:
    """(Account, container) from one azfuse storage-account file; errors name that file."""
    source = os.path.abspath(path)
    if not path.exists():
        raise ConfigError(
            source,
            "",
            f"no such file (storage_account {name!r} at {entry.source}: {entry.path}; "
            "its folder is $AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER, "
            f"default {_AZFUSE_ACCOUNT_FOLDER})",
        )
    s = _Section(source, "", _read_yaml(path, source), _AZFUSE_ACCOUNT_KEYS, strict=False)
    account = _key_account(name, s, s.secret("account_key"), s.secret("sas_token"))
    container = s.checked("container_name", _container, s.required("container_name"))
    return _register(account), container


# --------------------------------------------------------------------------- checks


def _check_mount_table(mounts: list[tuple[_Section, MountEntry]]) -> None:
    """No two entries may share a folder, nest, or share a cache folder.

    Nesting is refused because one path would then belong to two entries.
    """
    for later, (entry, mount) in enumerate(mounts):
        for earlier_entry, earlier in mounts[:later]:
            other = earlier_entry.where("local")
            if mount.local == earlier.local:
                raise entry.error("local", f"{mount.local!r} is also {other}")
            if _inside(mount.local, earlier.local):
                raise entry.error("local", f"{mount.local!r} is inside {other} {earlier.local!r}")
            if _inside(earlier.local, mount.local):
                raise entry.error("local", f"{mount.local!r} contains {other} {earlier.local!r}")
            mine, theirs = str(mount.cache_dir), str(earlier.cache_dir)
            if mine == theirs or _inside(mine, theirs) or _inside(theirs, mine):
                raise entry.error(
                    "cache",
                    f"{mine!r} overlaps {earlier_entry.where('cache')} {theirs!r}: "
                    "each entry needs a cache folder of its own",
                )


def _inside(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def _local(value: str) -> str:
    """A mount entry's folder: '/'-separated names that are each a valid file name."""
    trimmed = value.strip("/")
    if not trimmed:
        raise ValueError("empty: give a folder name such as 'datasets'")
    for segment in _segments(trimmed, value):
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
            raise ValueError(f"a name in it is longer than {_MAX_NAME_BYTES} bytes")
    return trimmed


def _prefix(value: str) -> str:
    """A blob-name prefix: '' for the whole container, else 'a/b/' (one trailing '/')."""
    trimmed = value.strip("/")
    if not trimmed:
        return ""
    _segments(trimmed, value)
    if len(trimmed) + 1 > _MAX_BLOB_NAME:
        raise ValueError(f"longer than {_MAX_BLOB_NAME} characters, Azure's limit for blob names")
    return trimmed + "/"


def _segments(trimmed: str, value: str) -> list[str]:
    """The '/'-separated names of a path given as `value`, each one a name a folder can
    have (not empty, '.' or '..', no NUL)."""
    segments = trimmed.split("/")
    for segment in segments:
        if not segment:
            raise ValueError(f"{value!r} has an empty name between two '/'")
        if segment in (".", ".."):
            raise ValueError(f"{segment!r} cannot be a folder name (in {value!r})")
        if "\0" in segment:
            raise ValueError(f"{value!r} contains a NUL character")
    return segments


def _container(value: str) -> str:
    if value in _SPECIAL_CONTAINERS or _CONTAINER_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"invalid container name {value!r}: use 3-63 lowercase letters, digits and single "
        "hyphens, starting and ending with a letter or digit"
    )


def _account_name(value: str) -> str:
    if _ACCOUNT_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"invalid storage account name {value!r}: use 3-24 lowercase letters and digits"
    )


def _endpoint(value: str) -> str:
    """A blob endpoint URL, without its trailing slash. Never echoed: it might hold a SAS."""
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "expected an http:// or https:// URL, such as https://ACCOUNT.blob.core.windows.net"
        )
    if parts.query or parts.fragment or "?" in value:
        raise ValueError("must not contain '?' or '#': give a SAS as sas_token")
    return value.strip().rstrip("/")


def _default_endpoint(account_name: str) -> str:
    return f"https://{account_name}.blob.core.windows.net"


def _account_key(value: str) -> str:
    """An account key, which is base64. The message never includes the key."""
    key = value.strip()
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise ValueError(
            "not valid base64 (an account key is the 88-character string from the portal)"
        )
    return key


def _sas_token(value: str) -> str:
    """A SAS token without its leading '?'. The message never includes the token."""
    token = value.strip().removeprefix("?")
    if not token:
        raise ValueError("empty")
    if any(c.isspace() for c in token):
        raise ValueError("contains whitespace")
    if "sig" not in parse_qs(token, keep_blank_values=True):
        raise ValueError("not a SAS token: it has no sig= parameter")
    return token


def _connection_string(text: str) -> tuple[str, str, str | None, str | None]:
    """(account_name, endpoint, account_key, sas_token) from an Azure connection string."""
    pairs: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError("malformed: expected Key=Value pairs separated by ';'")
        pairs[key.strip().lower()] = value.strip()
    if not pairs:
        raise ValueError("empty")
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return AZURITE_ACCOUNT, AZURITE_ENDPOINT, AZURITE_KEY, None
    key = pairs.get("accountkey") or None
    sas = pairs.get("sharedaccesssignature") or None
    register_secret(key)
    register_secret(sas)
    if key is not None:
        key = _prefixed("AccountKey", _account_key, key)
    if sas is not None:
        sas = _prefixed("SharedAccessSignature", _sas_token, sas)
    name = pairs.get("accountname") or None
    if pairs.get("blobendpoint"):
        endpoint = _prefixed("BlobEndpoint", _endpoint, pairs["blobendpoint"])
        name = name or _account_name_from_endpoint(endpoint)
    else:
        if not name:
            raise ValueError("has neither AccountName nor BlobEndpoint")
        protocol = pairs.get("defaultendpointsprotocol", "https").lower()
        if protocol not in ("http", "https"):
            raise ValueError("DefaultEndpointsProtocol must be http or https")
        suffix = pairs.get("endpointsuffix", "core.windows.net").strip(".")
        endpoint = f"{protocol}://{name}.blob.{suffix}"
    return _prefixed("AccountName", _account_name, name), endpoint, key, sas


def _prefixed(part: str, check: Callable[[str], str], value: str) -> str:
    """`check(value)`, naming which part of the connection string was wrong."""
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{part}: {exc}") from None


def _account_name_from_endpoint(endpoint: str) -> str:
    """The account in a BlobEndpoint: first path segment for an emulator, else first label."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if host == "localhost" or "." not in host or _is_ip(host):
        return parts.path.strip("/").split("/")[0]
    return host.split(".", 1)[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _sas_signatures(token: str) -> list[str]:
    """The sig= values of a SAS, as written and decoded: what logs would show of it."""
    found = []
    for part in token.split("&"):
        if part.lower().startswith("sig="):
            raw = part[len("sig=") :]
            found.extend((raw, unquote(raw)))
    return found


def _connection_string_secrets(text: str) -> list[str]:
    """AccountKey and SharedAccessSignature (and its sig) in a connection string."""
    found = []
    for part in text.split(";"):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key == "accountkey":
            found.append(value.strip())
        elif key == "sharedaccesssignature":
            found.append(value.strip())
            found.extend(_sas_signatures(value.strip().removeprefix("?")))
    return found


# --------------------------------------------------------------------------- templates


def _fill(text: str, variables: Mapping[str, str]) -> str:
    """`text` with each {name} replaced by its value; {{ and }} stand for { and }."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            raise ValueError(f"a lone {token!r}: write {token * 2} for a literal {token}")
        if name not in variables:
            close = difflib.get_close_matches(name, list(variables), n=1, cutoff=0.6)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            known = ", ".join(f"{{{key}}}" for key in variables) or "none"
            raise ValueError(f"unknown placeholder {{{name}}}{hint} (known: {known};"
                             " write {{ and }} for literal braces)")
        return _variable_value(name, variables[name])

    return _PLACEHOLDER.sub(one, text)


def _variable_value(name: str, value: str) -> str:
    """A placeholder's value, checked: it becomes part of paths and blob names."""
    where = "--user or $BLOBMOUNT_USER" if name == "user" else f"{{{name}}}"
    if not value:
        raise ValueError(f"{{{name}}} is empty: give {where}")
    if value in (".", "..") or any(c in value for c in "/\0{}") or value != value.strip():
        raise ValueError(f"{{{name}}} is {value!r}, which cannot be one name: give {where}")
    return value


def _invoking_user() -> str:
    """The name of the user running this process (its real uid)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _secret_file(s: _Section, key: str) -> str | None:
    """The secret held in the file named at `key` (`~` and $VARIABLES expanded)."""
    named = s.string(key)
    if named is None:
        return None
    path = Path(os.path.expandvars(named)).expanduser()
    if not path.is_absolute():
        path = Path(s.source).parent / path
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise s.error(key, f"no such file: {path}") from None
    except PermissionError:
        raise s.error(key, f"cannot read {path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise s.error(key, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
                      ) from None
    register_secret(value)
    if not value:
        raise s.error(key, f"{path} is empty")
    return value


# --------------------------------------------------------------------------- helpers


def _register(account: Account) -> Account:
    """Register the account's secrets for redaction; returns it for chaining."""
    for secret in account.secrets():
        register_secret(secret)
    return account


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _join(path: str, key: str | int) -> str:
    """The key path of `key` inside `path`: `mounts[1]`, `mounts[1].local`, `listing_ttl`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    """How a YAML value reads to a user, for "expected X, got Y"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: Iterable[str], listing: str) -> str:
    """A hint for a likely typo (" (did you mean 'x'?)"), else the valid choices."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if not choices:
        return " (none defined)"
    return f" ({listing}: {', '.join(choices)})"


def _absolute(path: Path) -> Path:
    """`path` made absolute against the current folder, with `..` resolved textually."""
    return Path(os.path.abspath(path.expanduser()))


def _default_mount_cache(cache_dir: Path, local: str) -> Path:
    # '__' keeps nested entries (`a/b`) as one flat folder per entry.
    return cache_dir / local.replace("/", "__")


def xdg_dir(variable: str, fallback: str) -> Path:
    """An XDG base folder ($XDG_CACHE_HOME, ...), else ~/`fallback`; relative values are
    ignored, as the XDG spec says."""
    value = os.environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def _user_config_file() -> Path:
    if os.geteuid() == 0:
        return _SYSTEM_CONFIG
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "blobmount" / "config.yaml"


def _must_exist(path: Path) -> Path:
    if not path.exists():
        raise ConfigError(str(path), "", "no such file")
    return path
