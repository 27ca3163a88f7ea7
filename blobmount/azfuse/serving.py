"""Which blobmount mount serves azfuse's logical paths, and where each path is in it.

azfuse's config maps a `local` folder (relative to the current folder, as azfuse takes
it) to a container prefix. blobmount mounts that same config, each entry as a folder
under one mount point; a logical path `data/abc.txt` is then
`<mount point>/<entry's folder>/abc.txt`. The mount used is, in this order: the one
$BLOBMOUNT_MOUNTPOINT names; a live blobmount mount of the config
($AZFUSE_CLOUD_FUSE_CONFIG_FILE) anywhere on the machine; a mount of our own, made the
first time it is needed in a folder under ~/.blobmount/azfuse/ and left for the next
process of the same user to find.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import control, inventory
from ..azure import Remote
from ..client import Client
from ..config import EMBEDDED_SOURCE, load_config
from ..errors import BlobmountError

log = logging.getLogger("blobmount.azfuse")

USE_FUSE = "AZFUSE_USE_FUSE"
CONFIG_FILE = "AZFUSE_CLOUD_FUSE_CONFIG_FILE"
ACCOUNT_FOLDER = "AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER"
MOUNTPOINT = "BLOBMOUNT_MOUNTPOINT"
#: azfuse's defaults, relative to the current folder.
DEFAULT_CONFIG = "aux_data/configs/azfuse.yaml"
DEFAULT_ACCOUNT_FOLDER = "./aux_data/storage_account"


def use_fuse() -> bool:
    """$AZFUSE_USE_FUSE: unset or 0, plain local files (azfuse's default)."""
    value = os.environ.get(USE_FUSE, "").strip() or "0"
    try:
        return int(value) != 0
    except ValueError:
        raise BlobmountError(f"${USE_FUSE}={value!r}: give 0 or 1") from None


@dataclass(frozen=True)
class Root:
    """One entry: the absolute folder azfuse's `local` names, the entry's folder under
    the mount point, and its prefix in the container."""

    logical: str
    shown: str
    prefix: str


@dataclass
class Served:
    """The mount that serves the logical paths."""

    mountpoint: str
    config: str  # the config file the mount's daemon read
    roots: list[Root]
    client: Client
    _remotes: dict[int, Remote] = field(default_factory=dict)

    def locate(self, fname: str | os.PathLike) -> str | None:
        """The logical path relative to the mount point; None outside every entry
        (such a path is a plain local file, as in azfuse)."""
        absolute = os.path.abspath(os.fspath(fname))
        for root in self.roots:
            if absolute == root.logical:
                return root.shown
            if absolute.startswith(root.logical.rstrip("/") + "/"):
                return f"{root.shown}/{absolute[len(root.logical.rstrip('/')) + 1:]}"
        return None

    def path(self, relative: str) -> str:
        """The path under the mount point."""
        return os.path.join(self.mountpoint, relative) if relative else self.mountpoint

    def entry_of(self, relative: str) -> int:
        """The index of the entry holding a path relative to the mount point."""
        for index, root in enumerate(self.roots):
            if relative == root.shown or relative.startswith(root.shown + "/"):
                return index
        raise BlobmountError(f"{relative}: not in any mount entry")

    def blob(self, relative: str) -> tuple[Remote, str]:
        """The container (through the SDK, with the config's credentials) and the blob
        name of a file: for what the mount does not do (ranged reads, tiers, URLs)."""
        index = self.entry_of(relative)
        if self.config == EMBEDDED_SOURCE:
            raise BlobmountError(f"{self.mountpoint} serves the embedded default, whose"
                                 " account this process cannot reach")
        if index not in self._remotes:
            entry = load_config(self.config).mounts[index]
            self._remotes[index] = Remote(entry.account, entry.container)
        root = self.roots[index]
        return self._remotes[index], root.prefix + relative[len(root.shown):].strip("/")


def serve() -> Served:
    """The mount to use, found or made (see the module's doc)."""
    explicit = os.environ.get(MOUNTPOINT)
    if explicit:
        try:
            status = Client(explicit).status()
        except BlobmountError as exc:
            raise BlobmountError(f"${MOUNTPOINT}={explicit}: {exc}") from None
    else:
        config = Path(os.environ.get(CONFIG_FILE) or DEFAULT_CONFIG).expanduser()
        if not config.is_file():
            raise BlobmountError(f"{config}: no such config file (set ${CONFIG_FILE})")
        status = live_mount_of(config) or _mount_own(config)
    mountpoint = status["mountpoint"]
    return Served(mountpoint, status["config"], _roots(status), Client(mountpoint))


def live_mount_of(config: Path) -> dict[str, Any] | None:
    """The status of a live blobmount mount of `config`, if the machine has one."""
    wanted = os.path.realpath(config)
    for record in inventory.every_mount():
        source = record.status.get("config", "") if record.state == inventory.LIVE else ""
        if source and os.path.realpath(source) == wanted:
            return record.status
    return None


def own_folder(config: Path) -> Path:
    """Where we mount `config` ourselves: one folder per config and account folder."""
    accounts = os.path.abspath(os.environ.get(ACCOUNT_FOLDER) or DEFAULT_ACCOUNT_FOLDER)
    key = hashlib.sha256(f"{os.path.realpath(config)}\0{accounts}".encode()).hexdigest()
    return control.state_dir() / "azfuse" / key[:16]


def _mount_own(config: Path) -> dict[str, Any]:
    """Mount `config` in a folder of our own, unless another process just did."""
    folder = own_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    mountpoint = folder / "mnt"
    with open(folder / "lock", "a") as lock:
        # Two processes starting together: the second finds the first one's mount.
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = live_mount_of(config)
        if found is not None:
            return found
        mountpoint.mkdir(exist_ok=True)
        _detach_if_dead(mountpoint)
        env = dict(os.environ)
        # The mount's own store, so it never meets the cache folder of another mount.
        env["CACHE_DIRECTORY"] = str(folder / "cache")
        result = subprocess.run(
            [sys.executable, "-m", "blobmount", "mount", str(mountpoint), "--config",
             str(config.absolute())], env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            why = (result.stderr.strip().splitlines() or ["it exited with an error"])[-1]
            raise BlobmountError(f"cannot mount {config} for blobmount.azfuse: {why}")
        log.info("blobmount.azfuse: mounted %s on %s (it stays for the next process;"
                 " `blobmount unmount %s` detaches it)", config, mountpoint, mountpoint)
    return Client(mountpoint).status()


def _detach_if_dead(mountpoint: Path) -> None:
    """A mount of ours whose daemon is gone is detached; any other is an error."""
    records = [r for r in inventory.blobmount_mounts() if r.mountpoint == str(mountpoint)]
    if not records:
        return
    record = inventory.inspect(records[-1])
    if record.state != inventory.DEAD:
        raise BlobmountError(inventory.describe(record))
    subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False,
                   capture_output=True)


def _roots(status: dict[str, Any]) -> list[Root]:
    """Each entry's logical folder: azfuse's `local` as written in an azfuse config (an
    absolute `local` stays absolute), else the entry's folder, relative to the current
    folder."""
    entries = status["mounts"]
    shown = [entry["local"] for entry in entries]
    written: list[Any] = []
    try:
        with open(status["config"], encoding="utf-8") as source:
            document = yaml.safe_load(source)
        if isinstance(document, list) and len(document) == len(shown):
            written = [item.get("local") if isinstance(item, dict) else None
                       for item in document]
    except (OSError, yaml.YAMLError):
        pass  # the embedded default, or a file we may not read: the shown folders
    return [Root(os.path.abspath(written[index] if index < len(written)
                                 and isinstance(written[index], str) else local), local,
                 entries[index]["prefix"])
            for index, local in enumerate(shown)]
