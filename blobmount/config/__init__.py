"""The config file: YAML in, frozen dataclasses out, every mistake a one-line `ConfigError`.

Two formats are read. blobmount's own is a mapping (``accounts:``, ``mounts:`` and a few
settings); azfuse's is a list of ``{local, remote, cache, storage_account}`` entries
plus a folder of per-account YAML files, read as it is so azfuse users can switch
without rewriting anything. Both end as the same `Config`.

Errors name the file, the key path (``mounts[1].container``) and what is wrong, and
never a secret: every account key, SAS token and connection string is handed to
`blobmount.log.register_secret` the moment it is read, before it is even validated.

This is layer 0: it imports only the standard library, PyYAML and our layer-0 modules.

One module per job, each importing only those above it in this list: `credentials`
(keys, SAS tokens, connection strings, Azurite's account), `model` (the dataclasses),
`locate` (which file, which folders), `templates` (placeholders), `reader` (YAML and
typed values), `checks` (names, the mount table), `native` and `azfuse` (the formats).
This package re-exports what the rest of blobmount uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from blobmount.errors import ConfigError

from .azfuse import load_azfuse
from .checks import container_name
from .credentials import AZURITE_ACCOUNT, AZURITE_ENDPOINT, AZURITE_KEY, check_endpoint
from .locate import absolute, default_cache_dir, find_config, xdg_dir
from .model import (
    EMBEDDED_SOURCE,
    Account,
    Config,
    GiB,
    KiB,
    MiB,
    MountEntry,
    Settings,
    TiB,
    register_account,
)
from .native import load_native
from .reader import (
    kind,
    parse_address,
    parse_id,
    parse_size,
    parse_umask,
    read_yaml,
    setting_option,
)
from .templates import default_variables

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


def load_config(
    path: str | os.PathLike[str], variables: Mapping[str, str] | None = None
) -> Config:
    """Read a config file; a top-level list is azfuse's format, a mapping is ours.

    `variables` fill the placeholders (`remote: users/{user}`) of the keys that take
    them (local, remote, url, container, cache, cache_dir); None means
    `default_variables()`. A placeholder without a value is a ConfigError.
    """
    source = os.fspath(path)
    data = read_yaml(Path(source), source)
    values = dict(default_variables() if variables is None else variables)
    if isinstance(data, list):
        return load_azfuse(data, source, values)
    if isinstance(data, dict):
        return load_native(data, source, values)
    raise ConfigError(
        source,
        "",
        f"expected a mapping (blobmount format) or a list (azfuse format), got {kind(data)}",
    )


def embedded_config(endpoint: str, cache_dir: Path | None = None) -> Config:
    """The config used when no file exists anywhere: one Azurite container, `blobmount`.

    It lets `blobmount mount DIR` work out of the box against a local Azurite.
    """
    try:
        endpoint = check_endpoint(endpoint)
    except ValueError as exc:
        raise ConfigError(EMBEDDED_SOURCE, "endpoint", str(exc)) from None
    root = absolute(cache_dir) if cache_dir is not None else default_cache_dir()
    account = register_account(
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
