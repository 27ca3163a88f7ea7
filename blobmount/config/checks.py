"""Names Azure and the mount accept (containers, folders, prefixes), and the mount
table's rule that no two entries overlap."""

from __future__ import annotations

import re

from .locate import inside
from .model import MountEntry
from .reader import Section

# Azure's naming rules; checking them here turns a later HTTP 400 into a clear message.
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_SPECIAL_CONTAINERS = ("$root", "$web")
_MAX_BLOB_NAME = 1024
_MAX_NAME_BYTES = 255


def container_name(value: str) -> str:
    """`value` if it is a valid container name; else a ValueError saying what is valid."""
    return check_container(value)


def check_mount_table(mounts: list[tuple[Section, MountEntry]]) -> None:
    """No two entries may share a folder, nest, or share a cache folder.

    Nesting is refused because one path would then belong to two entries.
    """
    for later, (entry, mount) in enumerate(mounts):
        for earlier_entry, earlier in mounts[:later]:
            other = earlier_entry.where("local")
            if mount.local == earlier.local:
                raise entry.error("local", f"{mount.local!r} is also {other}")
            if inside(mount.local, earlier.local):
                raise entry.error("local", f"{mount.local!r} is inside {other} {earlier.local!r}")
            if inside(earlier.local, mount.local):
                raise entry.error("local", f"{mount.local!r} contains {other} {earlier.local!r}")
            mine, theirs = str(mount.cache_dir), str(earlier.cache_dir)
            if mine == theirs or inside(mine, theirs) or inside(theirs, mine):
                raise entry.error(
                    "cache",
                    f"{mine!r} overlaps {earlier_entry.where('cache')} {theirs!r}: "
                    "each entry needs a cache folder of its own",
                )


def check_local(value: str) -> str:
    """A mount entry's folder: '/'-separated names that are each a valid file name."""
    trimmed = value.strip("/")
    if not trimmed:
        raise ValueError("empty: give a folder name such as 'datasets'")
    for segment in _segments(trimmed, value):
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
            raise ValueError(f"a name in it is longer than {_MAX_NAME_BYTES} bytes")
    return trimmed


def check_prefix(value: str) -> str:
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


def check_container(value: str) -> str:
    if value in _SPECIAL_CONTAINERS or _CONTAINER_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"invalid container name {value!r}: use 3-63 lowercase letters, digits and single "
        "hyphens, starting and ending with a letter or digit"
    )
