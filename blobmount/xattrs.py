"""Extended attributes: a blob's properties, metadata and index tags, seen as xattrs.

    user.blob.etag, user.blob.content_type, user.blob.content_md5 (hex),
    user.blob.last_modified (ISO 8601, UTC), user.blob.access_tier   read-only
    user.blobmount.cache_state  (clean, dirty, pending, stale, uncached) read-only
    user.meta.NAME   the blob's metadata NAME: get, set, remove (lands on the blob)
    user.tag.NAME    the blob's index tag NAME, where the account has tags (else ENOTSUP)

Properties come from one HEAD, kept for the listing TTL while the file's ETag is
unchanged; names outside `user.` (security.*, system.*, asked by `ls -l` for every
file) are answered ENODATA without any network. Folders have no attributes.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .azure import FOLDER_MARKER_KEY, BlobProperties
from .cache import Cache, shown_state
from .config import MountEntry
from .errors import (
    Busy,
    InvalidArgument,
    NoSuchAttribute,
    NotPermitted,
    NotSupported,
    ReadOnly,
    RemoteNotFound,
    RemoteUnsupported,
)
from .namespace import Namespace
from .store import EntryNode, Node
from .uploads import Uploads

BLOB = "user.blob."
META = "user.meta."
TAG = "user.tag."
CACHE_STATE = "user.blobmount.cache_state"
#: Blobs whose properties are kept for reuse within the listing TTL.
SEEN_MAX = 4096
PROPERTIES = ("etag", "content_type", "content_md5", "last_modified", "access_tier")
# Azure's rules: metadata names are C# identifiers, values HTTP header text; tag keys
# 1-128 and values 0-256 characters of letters, digits, space and + - . / : = _
_META_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_META_VALUE = re.compile(r"[\x20-\x7e]*")
_TAG_KEY = re.compile(r"[A-Za-z0-9 +\-./:=_]{1,128}")
_TAG_VALUE = re.compile(r"[A-Za-z0-9 +\-./:=_]{0,256}")


def _no_data(name: str) -> NoSuchAttribute:
    return NoSuchAttribute(f"no attribute {name}")


@dataclass
class _Seen:
    when: float
    etag: str | None
    props: BlobProperties | None
    tags: dict[str, str] | None = None
    tags_unsupported: bool = False


class Xattrs:
    """Answers the four xattr calls for the nodes of a namespace."""

    def __init__(self, namespace: Namespace, cache: Cache, uploads: Uploads,
                 entries: Sequence[MountEntry]) -> None:
        self.namespace = namespace
        self.store = namespace.store
        self.cache = cache
        self.uploads = uploads
        self.entries = entries
        self._seen: dict[int, _Seen] = {}
        self._no_tags: set[int] = set()  # entries whose account has no index tags

    # -- reading ------------------------------------------------------------------

    async def get(self, node: Node, name: str) -> bytes:
        if not name.startswith("user.") or node.is_dir or not isinstance(node, EntryNode):
            raise _no_data(name)
        if name == CACHE_STATE:
            return self.cache_state(node).encode()
        if name.startswith(BLOB) and name[len(BLOB):] in PROPERTIES:
            props = await self._props(node)
            value = _property(props, name[len(BLOB):]) if props else None
            if value is None:
                raise _no_data(name)
            return value.encode()
        if name.startswith(META):
            props = await self._props(node)
            wanted = name[len(META):].lower()
            for key, value in (props.metadata if props else {}).items():
                if key.lower() == wanted:
                    return value.encode()
            raise _no_data(name)
        if name.startswith(TAG):
            tags = await self._tags(node, quiet=False)
            if name[len(TAG):] in tags:
                return tags[name[len(TAG):]].encode()
        raise _no_data(name)

    async def names(self, node: Node) -> list[str]:
        if node.is_dir or not isinstance(node, EntryNode):
            return []
        found = [CACHE_STATE]
        props = await self._props(node)
        if props is not None:
            found += [BLOB + key for key in PROPERTIES if _property(props, key) is not None]
            found += [META + key for key in sorted(props.metadata)]
            found += [TAG + key for key in sorted(await self._tags(node, quiet=True))]
        return found

    def cache_state(self, node: EntryNode) -> str:
        path = self.cache.path_for(self.entries[node.entry_index], node.blob)
        record = self.store.cached_file(str(path)) if path.exists() else None
        return shown_state(record, journaled=self.store.upload(str(path)) is not None,
                           etag=node.etag)

    async def _props(self, node: EntryNode) -> BlobProperties | None:
        """The blob's properties (None: no blob yet), from a recent HEAD if there was one."""
        seen = self._seen.get(node.inode)
        if seen is not None and seen.etag == node.etag and not node.unuploaded and (
                time.monotonic() - seen.when < self.namespace.ttl):
            return seen.props
        remote = self.namespace.remotes[node.entry_index]
        try:
            props = await remote.head(node.blob)
        except RemoteNotFound:
            props = None
        # Newest last, so the first is the oldest: a walk over many files keeps only
        # the last SEEN_MAX of them, which is all the TTL would reuse anyway.
        self._seen.pop(node.inode, None)
        self._seen[node.inode] = _Seen(time.monotonic(), node.etag, props)
        while len(self._seen) > SEEN_MAX:
            del self._seen[next(iter(self._seen))]
        return props

    async def _tags(self, node: EntryNode, *, quiet: bool) -> dict[str, str]:
        """The blob's index tags; ENOTSUP where the account has none (quiet: {})."""
        if node.entry_index in self._no_tags:
            if quiet:
                return {}
            raise NotSupported("the account has no blob index tags")
        await self._props(node)
        seen = self._seen[node.inode]
        if seen.props is None:
            return {}
        if seen.tags is None:
            remote = self.namespace.remotes[node.entry_index]
            try:
                seen.tags = await remote.tags(node.blob)
            except RemoteUnsupported:
                self._no_tags.add(node.entry_index)
                return await self._tags(node, quiet=quiet)
        return seen.tags

    # -- changing -----------------------------------------------------------------

    async def set(self, node: Node, name: str, value: bytes) -> None:
        node, kind, key = self._writable(node, name)
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidArgument(f"{name}: the value must be ASCII") from None
        if kind == "meta" and not _META_VALUE.fullmatch(text):
            raise InvalidArgument(f"{name}: the value must be printable ASCII")
        if kind == "tag" and not _TAG_VALUE.fullmatch(text):
            raise InvalidArgument(f"{name}: not a valid tag value")
        await self._change(node, kind, key, text)

    async def remove(self, node: Node, name: str) -> None:
        node, kind, key = self._writable(node, name)
        if kind == "meta":
            props = await self._props(node)
            if props is None or key.lower() not in {k.lower() for k in props.metadata}:
                raise _no_data(name)
        elif key not in await self._tags(node, quiet=False):
            raise _no_data(name)
        await self._change(node, kind, key, None)

    def _writable(self, node: Node, name: str) -> tuple[EntryNode, str, str]:
        """(the file's node, 'meta' | 'tag', key) for a name that can be set on `node`;
        else the error that says why not."""
        if name.startswith(BLOB) or name.startswith("user.blobmount."):
            raise NotPermitted(f"{name} is read-only")
        if name.startswith(META):
            kind, key = "meta", name[len(META):]
            if not _META_NAME.fullmatch(key):
                raise InvalidArgument(f"{name}: metadata names are letters, digits"
                                      " and _, not starting with a digit")
            if key.lower() == FOLDER_MARKER_KEY:
                raise NotPermitted(f"{name} is kept by blobmount")
        elif name.startswith(TAG):
            kind, key = "tag", name[len(TAG):]
            if not _TAG_KEY.fullmatch(key):
                raise InvalidArgument(f"{name}: not a valid tag name")
            if node.entry_index in self._no_tags:
                raise NotSupported("the account has no blob index tags")
        else:
            raise NotSupported(f"{name}: only user.meta.* and user.tag.* can be set")
        if node.is_dir or not isinstance(node, EntryNode):
            raise NotSupported(f"{node.name}: folders have no attributes")
        if self.entries[node.entry_index].read_only:
            raise ReadOnly(f"{node.name} is read-only")
        return node, kind, key

    async def _change(self, node: EntryNode, kind: str, key: str, value: str | None) -> None:
        node = await self._uploaded(node)
        remote = self.namespace.remotes[node.entry_index]
        if kind == "tag":
            try:
                tags = await remote.update_tags(node.blob, {key: value})
            except RemoteUnsupported:
                self._no_tags.add(node.entry_index)
                raise
            seen = self._seen.get(node.inode)
            if seen is not None:
                seen.tags = tags
            return
        old, new = await remote.update_metadata(node.blob, {key: value})
        self._seen.pop(node.inode, None)
        self._rebase(node, old, new)

    async def _uploaded(self, node: EntryNode) -> EntryNode:
        """The node, once the blob holds its bytes: metadata goes on the blob."""
        if not node.unuploaded:
            return node
        entry = self.entries[node.entry_index]
        path = (self.uploads.marker_path(entry, node.blob) if node.is_dir
                else self.cache.path_for(entry, node.blob))
        row = self.store.upload(str(path))
        if row is None:
            raise Busy(f"{node.name} is open for writing")
        await self.uploads.upload_now(Path(row.path), row.version)
        node = self.namespace.node(node.inode).in_entry()
        if node.unuploaded:
            raise Busy(f"{node.name} is being written")
        return node

    def _rebase(self, node: EntryNode, old: str, new: str) -> None:
        """Setting metadata made a new ETag for the same bytes: the cached copy (and a
        pending upload based on it) stay good, under the new ETag."""
        path = self.cache.path_for(self.entries[node.entry_index], node.blob)
        if node.etag == old:
            self.store.update_file(node.inode, size=node.size, mtime_ns=node.mtime_ns,
                                   etag=new, checked=time.time())
        record = self.store.cached_file(str(path))
        if record is not None and record.etag == old:
            self.store.put_cached_file(str(path), blob=record.blob, etag=new, size=record.size,
                                       state=record.state)
        row = self.store.upload(str(path))
        if row is not None and row.base_etag == old:
            self.store.rebase_upload(str(path), new)


def _property(props: BlobProperties, key: str) -> str | None:
    if key == "last_modified":
        stamp = props.last_modified
        return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stamp else None
    return getattr(props, key) or None
