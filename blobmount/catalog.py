"""What a path under the mount point stands for, seen from the containers and the cache.

Control requests (prefetch, stats, cache listings) name paths relative to the mount
point. `places` turns one into the mount entries and blob names it covers; `files_under`
lists, through the SDK and recursively, the files shown there, hidden names left out
as the mount leaves them out. Nothing here walks the mount itself: the daemon serving
it would wait for itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .azure import AsyncContainer, BlobItem
from .config import MountEntry
from .errors import NotFound, OutsideTheMount, RemoteNotFound
from .listing import shown_name


@dataclass(frozen=True, slots=True)
class Place:
    """A path under the mount point, inside one entry."""

    index: int  # the entry's index in the config
    entry: MountEntry
    blob: str  # the blob name (a file) or prefix (a folder, '' or ending in '/') it shows
    shown: str  # the path relative to the mount point
    whole_entry: bool  # the entry's own folder: certainly a folder


def normalized(path: str) -> str:
    """A path relative to the mount point, without '.', '..', or leading and trailing '/'."""
    if "\0" in path:
        raise OutsideTheMount(f"{path!r}: not a path")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if not parts:
                raise OutsideTheMount(f"{path!r} is outside the mount point")
            parts.pop()
        elif segment not in ("", "."):
            parts.append(segment)
    return "/".join(parts)


def places(entries: Sequence[MountEntry], path: str) -> list[Place]:
    """The entries (and where in them) a path under the mount point covers.

    Inside an entry: that one place. At or above entries' folders (the mount point, a
    parent of a nested `local`): each entry below it, whole. Elsewhere: none.
    """
    path = normalized(path)
    found = []
    for index, entry in enumerate(entries):
        if path == entry.local or entry.local.startswith(f"{path}/") or not path:
            found.append(Place(index, entry, entry.prefix, entry.local, True))
        elif path.startswith(f"{entry.local}/"):
            rest = path[len(entry.local) + 1:]
            found.append(Place(index, entry, entry.prefix + rest, path, False))
    return found


def shown_path(entry: MountEntry, blob: str) -> str | None:
    """Where a blob of `entry` shows under the mount point, or None if it does not."""
    if not blob.startswith(entry.prefix):
        return None
    rest = blob[len(entry.prefix):]
    if not rest or any(shown_name(segment) is None for segment in rest.split("/")):
        return None
    return f"{entry.local}/{rest}"


def inside(place: Place, blob: str) -> bool:
    """Whether `blob` (a file's name) is at or under `place`."""
    if place.whole_entry:
        return blob.startswith(place.blob)
    return blob == place.blob or blob.startswith(place.blob + "/")


def shown_files(entry: MountEntry, items: Sequence[BlobItem]) -> list[tuple[str, BlobItem]]:
    """(shown path, item) of the files among `items` that the mount shows.

    Left out, as the mount leaves them out: folder marker blobs, names POSIX cannot
    show, and a blob `a` when blobs under `a/` exist (the folder wins).
    """
    folders = set()
    for item in items:
        name = item.name.rstrip("/")
        cut = name.rfind("/")
        while cut > 0:
            if name[:cut + 1] in folders:
                break
            folders.add(name[:cut + 1])
            cut = name.rfind("/", 0, cut)
        if item.is_dir:
            folders.add(name + "/")
    found = []
    for item in items:
        if item.is_dir or f"{item.name}/" in folders:
            continue
        path = shown_path(entry, item.name)
        if path is not None:
            found.append((path, item))
    return found


async def files_under(remote: AsyncContainer, place: Place) -> list[tuple[str, BlobItem]]:
    """(shown path, item) of every file the mount shows at or under `place`.

    A recursive listing through the SDK; a name that is both a folder and a blob is
    the folder. NotFound when there is nothing there.
    """
    if place.whole_entry:
        return shown_files(place.entry, [item async for item in remote.list_files(place.blob)])
    items = [item async for item in remote.list_files(place.blob + "/")]
    if items:
        return shown_files(place.entry, items)
    try:
        item = await remote.properties(place.blob)
    except RemoteNotFound:
        raise NotFound(f"{place.shown}: no such file or folder") from None
    if item.is_dir:  # an empty folder (a marker blob)
        return []
    return shown_files(place.entry, [item])
