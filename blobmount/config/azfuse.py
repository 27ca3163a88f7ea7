"""azfuse's format, read as it is: a list of {local, remote, cache, storage_account}
entries plus a folder of per-account YAML files."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

from blobmount.errors import ConfigError

from .checks import check_container, check_local, check_mount_table, check_prefix
from .locate import default_cache_dir, default_mount_cache, under_shm
from .model import Account, Config, MountEntry, Settings, register_account
from .native import key_account
from .reader import Section, join_key, read_yaml

_AZFUSE_ACCOUNT_FOLDER = "./aux_data/storage_account"

_AZFUSE_ENTRY_KEYS = ("local", "remote", "cache", "storage_account", "cache_lock")
_AZFUSE_ACCOUNT_KEYS = ("account_name", "account_key", "sas_token", "container_name", "endpoint")


def load_azfuse(items: list[object], source: str, variables: dict[str, str]) -> Config:
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
        entry = Section(source, join_key("", index), raw, _AZFUSE_ENTRY_KEYS, strict=False,
                         variables=variables)
        local = entry.checked("local", check_local, entry.required("local"))
        name = entry.required("storage_account")
        if not name:
            raise entry.error("storage_account", "empty")
        if name not in by_name:
            by_name[name] = _load_azfuse_account(folder / f"{name}.yaml", name, entry)
        account, container = by_name[name]
        cache = entry.folder("cache", relative_to=Path.cwd()) or default_mount_cache(
            cache_dir, local)
        mount = MountEntry(
            local=local,
            account=account,
            container=container,
            prefix=entry.checked("remote", check_prefix, entry.string("remote") or ""),
            read_only=not account.may_write(),
            cache_dir=cache,
            # azfuse's shm_as_tmp: a copy on /dev/shm goes once it is uploaded.
            drop_after_upload=under_shm(cache),
        )
        mounts.append((entry, mount))
    check_mount_table(mounts)
    return Config(
        source=source,
        cache_dir=cache_dir,
        accounts=MappingProxyType({name: account for name, (account, _) in by_name.items()}),
        mounts=tuple(mount for _, mount in mounts),
        settings=Settings(),
    )


def _load_azfuse_account(path: Path, name: str, entry: Section) -> tuple[Account, str]:
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
    s = Section(source, "", read_yaml(path, source), _AZFUSE_ACCOUNT_KEYS, strict=False)
    account = key_account(name, s, s.secret("account_key"), s.secret("sas_token"))
    container = s.checked("container_name", check_container, s.required("container_name"))
    return register_account(account), container
