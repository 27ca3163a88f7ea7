"""Where things are: the config file, the cache folders, the embedded Azurite's data,
and the XDG base folders they default to (relative XDG values are ignored, as the spec
says, for the daemon's folders too)."""

from __future__ import annotations

import os
from pathlib import Path

from blobmount.errors import ConfigError

# Module-level so tests can point them somewhere harmless.
_SYSTEM_CONFIG = Path("/etc/blobmount/config.yaml")
_SYSTEM_CACHE = Path("/var/cache/blobmount")

# Memory-backed: a cache folder here drops written files' copies once they are uploaded.
_SHM = Path("/dev/shm")


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


def absolute(path: Path) -> Path:
    """`path` made absolute against the current folder, with `..` resolved textually."""
    return Path(os.path.abspath(path.expanduser()))


def default_mount_cache(cache_dir: Path, local: str) -> Path:
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


def inside(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def under_shm(path: Path) -> bool:
    return path == _SHM or inside(str(path), str(_SHM))


def data_dir() -> Path:
    """Where the embedded Azurite keeps its data: $XDG_DATA_HOME/blobmount."""
    return xdg_dir("XDG_DATA_HOME", ".local/share") / "blobmount"


def embedded_cache_dir() -> Path:
    """The embedded default's cache: $XDG_CACHE_HOME/blobmount, for root too.

    Like its Azurite's data, it belongs to the user who started it; the system-wide
    /var/cache/blobmount is for the mounts of root's config.
    """
    return xdg_dir("XDG_CACHE_HOME", ".cache") / "blobmount"
