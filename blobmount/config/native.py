"""blobmount's own format: a mapping of `accounts:`, `mounts:` and settings."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from blobmount.log import register_secret

from .checks import check_container, check_local, check_mount_table, check_prefix
from .credentials import (
    check_account_key,
    check_account_name,
    check_endpoint,
    check_sas_token,
    default_endpoint,
    parse_connection_string,
)
from .locate import default_cache_dir, default_mount_cache, under_shm
from .model import Account, Config, MountEntry, Settings, register_account
from .reader import (
    Section,
    join_key,
    kind,
    parse_address,
    parse_id,
    parse_size,
    parse_umask,
    suggest,
)

_T = TypeVar("_T")
_D = TypeVar("_D")

_UPLOAD_MODES = ("sync", "async")
_PERMISSION_MODES = ("kept", "fixed")  # posix.PERMISSION_MODES (config is layer 0)

_SECRET_KEYS = ("account_key", "sas_token", "connection_string")
_ACCOUNT_KEYS = (
    "account_name", *_SECRET_KEYS, *(f"{key}_file" for key in _SECRET_KEYS), "endpoint",
)
_MOUNT_KEYS = ("local", "account", "container", "remote", "url", "cache", "read_only", "upload",
               "cache_max_bytes", "cache_max_age", "drop_after_upload")
_SETTINGS_KEYS = tuple(f.name for f in fields(Settings))
_TOP_KEYS = ("cache_dir", "accounts", "mounts", *_SETTINGS_KEYS)


def load_native(data: dict[object, object], source: str, variables: dict[str, str]) -> Config:
    top = Section(source, "", data, _TOP_KEYS, variables=variables)
    cache_dir = top.folder("cache_dir") or default_cache_dir()
    settings = _read_settings(top)
    accounts = _read_accounts(top)
    raw_mounts = top.data.get("mounts")
    if raw_mounts is None:
        raise top.error("mounts", "missing: list the folders to mount")
    if not isinstance(raw_mounts, list):
        raise top.error("mounts", f"expected a list, got {kind(raw_mounts)}")
    if not raw_mounts:
        raise top.error("mounts", "empty: list at least one folder to mount")
    mounts = []
    for index, raw in enumerate(raw_mounts):
        entry = Section(source, join_key("mounts", index), raw, _MOUNT_KEYS, variables=variables)
        mounts.append((entry, _read_native_mount(entry, accounts, cache_dir, settings)))
    check_mount_table(mounts)
    return Config(
        source=source,
        cache_dir=cache_dir,
        accounts=MappingProxyType(accounts),
        mounts=tuple(mount for _, mount in mounts),
        settings=settings,
    )


def _read_settings(top: Section) -> Settings:
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
        cache_sync_interval=top.number("cache_sync_interval", defaults.cache_sync_interval,
                                       minimum=0, inclusive=False),
        uid=_optional(top, "uid", parse_id, None),
        gid=_optional(top, "gid", parse_id, None),
        umask=_optional(top, "umask", parse_umask, defaults.umask),
        permissions=top.choice("permissions", _PERMISSION_MODES, defaults.permissions),
        metrics_address=_optional(top, "metrics_address", parse_address, None),
    )


def _optional(s: Section, key: str, parse: Callable[[object], _T], default: _D) -> _T | _D:
    """`parse` of the value at `key`, or `default` when it is absent."""
    value = s.data.get(key)
    return default if value is None else s.checked(key, parse, value)


def _fraction(s: Section, key: str, default: float) -> float:
    value = s.number(key, default, minimum=0, inclusive=True)
    if value > 1:
        raise s.error(key, f"must be a fraction from 0 to 1, got {value:g}")
    return value


def _cache_max_bytes(s: Section, default: int | None) -> int | None:
    value = s.data.get("cache_max_bytes")
    if value is None:
        return default
    size = s.checked("cache_max_bytes", parse_size, value)
    if size <= 0:
        raise s.error("cache_max_bytes", "must be more than 0 bytes")
    return size


def _cache_max_age(s: Section, default: float | None) -> float | None:
    if s.data.get("cache_max_age") is None:
        return default
    return s.number("cache_max_age", 0, minimum=0, inclusive=False)


def _read_accounts(top: Section) -> dict[str, Account]:
    raw = top.data.get("accounts")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise top.error("accounts", f"expected a mapping of names to accounts, got {kind(raw)}")
    accounts = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name:
            raise top.error("accounts", f"account names must be non-empty strings, got {name!r}")
        section = Section(top.source, join_key("accounts", name), body, _ACCOUNT_KEYS)
        accounts[name] = register_account(_read_account(name, section))
    return accounts


def _read_account(name: str, s: Section) -> Account:
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
    return key_account(name, s, key, sas)


def key_account(name: str, s: Section, key: str | None, sas: str | None) -> Account:
    """An account from account_name, an optional endpoint, and a key, a SAS, both or neither.

    Both formats share this: azfuse's account files allow a key and a SAS together.
    """
    account_name = s.checked("account_name", check_account_name, s.required("account_name"))
    endpoint = s.string("endpoint")
    if endpoint is not None:
        endpoint = s.checked("endpoint", check_endpoint, endpoint)
    return Account(
        name=name,
        account_name=account_name,
        endpoint=endpoint or default_endpoint(account_name),
        account_key=s.checked("account_key", check_account_key, key) if key else None,
        sas_token=s.checked("sas_token", check_sas_token, sas) if sas else None,
        use_identity=not (key or sas),
    )


def _account_from_connection_string(name: str, conn: str, s: Section) -> Account:
    """An account from a connection string; account_name/endpoint, if also given, must agree."""
    cs_name, cs_endpoint, key, sas = s.checked("connection_string", parse_connection_string, conn)
    account_name = s.string("account_name")
    if account_name is not None and account_name != cs_name:
        raise s.error(
            "account_name", f"{account_name!r} differs from the connection string's {cs_name!r}"
        )
    endpoint = s.string("endpoint")
    if endpoint is not None and s.checked("endpoint", check_endpoint, endpoint) != cs_endpoint:
        raise s.error("endpoint", "differs from the connection string's endpoint")
    return Account(
        name=name,
        account_name=cs_name,
        endpoint=cs_endpoint,
        account_key=key,
        sas_token=sas,
        connection_string=conn,
    )


def _read_native_mount(s: Section, accounts: dict[str, Account], cache_dir: Path,
                       settings: Settings) -> MountEntry:
    """One `mounts:` entry: where it shows (`local`) and what (`url` or account/container)."""
    local = s.checked("local", check_local, s.required("local"))
    url = s.string("url")
    if url is not None:
        clash = next((k for k in ("account", "container", "remote") if k in s.data), None)
        if clash:
            raise s.error(clash, "give either url or account/container/remote, not both")
        account, container, remote = s.checked("url", lambda u: _resolve_url(u, accounts), url)
        container = s.checked("url", check_container, container)
        prefix = s.checked("url", check_prefix, remote)
    else:
        wanted = s.required("account", "missing: give account and container, or url")
        if wanted not in accounts:
            raise s.error(
                "account",
                f"unknown account {wanted!r}{suggest(wanted, accounts, 'accounts defined')}",
            )
        account = accounts[wanted]
        container = s.checked("container", check_container, s.required("container"))
        prefix = s.checked("remote", check_prefix, s.string("remote") or "")
    cache = s.folder("cache") or default_mount_cache(cache_dir, local)
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
        drop_after_upload=s.boolean("drop_after_upload", under_shm(cache)),
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
        account_name, endpoint = host, default_endpoint(host)
    elif scheme == "https" and ".blob." in host:
        account_name, endpoint = host.split(".", 1)[0], f"https://{host}"
    else:
        raise ValueError(
            "not a blob URL: expected https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX], "
            "az://ACCOUNT/CONTAINER[/PREFIX], or a configured account's endpoint and /CONTAINER"
        )
    account_name = check_account_name(account_name)
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


def _secret_file(s: Section, key: str) -> str | None:
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
