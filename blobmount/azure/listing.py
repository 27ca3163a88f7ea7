"""What listings and HEADs say of blobs: `BlobItem`, `BlobProperties`, the List Blobs
parser, and the `mtime` convention (rclone's metadata, else Last-Modified)."""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

from .. import posix

FOLDER_MARKER_KEY = "hdi_isfolder"
# A file's modification time as set through the mount (write, utimens), in rclone's
# format (RFC 3339 with nanoseconds, UTC), so rclone shows the same time.
MTIME_KEY = "mtime"


@dataclass(frozen=True, slots=True)
class BlobItem:
    """A blob or a virtual folder as a listing returns it."""

    name: str          # full name in the container; folders end in '/'
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    etag: str | None = None
    # What its metadata keeps (posix.py); folders: their marker blob's, if listed.
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    ctime_ns: int = 0  # Last-Modified: any change of bytes or metadata moves it
    is_link: bool = False
    special: int = 0   # a FIFO's, socket's or device's type bits (posix.SPECIAL_TYPES)
    rdev: int = 0


@dataclass(frozen=True, slots=True)
class BlobProperties:
    """Everything a HEAD of one blob says (for extended attributes)."""

    name: str
    size: int
    etag: str
    mtime_ns: int
    last_modified: dt.datetime | None
    content_type: str | None
    content_md5: str | None  # hex, as md5sum prints it
    access_tier: str | None
    metadata: Mapping[str, str]


def blob_mtime_ns(when: dt.datetime | None, metadata: Mapping[str, str] | None = None) -> int:
    """The blob's time: its `mtime` metadata if it has a valid one, else Last-Modified."""
    kept = parse_mtime((metadata or {}).get(MTIME_KEY))
    if kept is not None:
        return kept
    if when is None:
        return 0
    seconds = int(when.replace(microsecond=0, tzinfo=when.tzinfo or dt.UTC).timestamp())
    return seconds * 10**9 + when.microsecond * 1000


def format_mtime(mtime_ns: int) -> str:
    """`mtime` metadata for a time in ns since the epoch: 2017-07-14T02:40:00.123456789Z."""
    seconds, nanos = divmod(mtime_ns, 10**9)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_mtime(text: str | None) -> int | None:
    """ns since the epoch from RFC 3339 `mtime` metadata (any fraction, any offset)."""
    if not text:
        return None
    head, dot, rest = text.strip().partition(".")
    fraction = ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    else:
        head, zone = head[:19], head[19:]
    try:
        when = dt.datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    return int(when.timestamp()) * 10**9 + nanos


_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _http_date_ns(text: str | None) -> int:
    """ns since the epoch of an HTTP date ("Tue, 01 Dec 2026 09:00:00 GMT"), as
    blob_mtime_ns(parsedate_to_datetime(text)) gives, in a fifth of its time: a listing
    reads one per blob."""
    if not text:
        return 0
    try:
        _, day, month, year, clock, zone = text.split(" ")
        hours, minutes, seconds = clock.split(":")
        if zone != "GMT":
            raise ValueError(zone)
        return calendar.timegm((int(year), _MONTHS[month], int(day), int(hours),
                                int(minutes), int(seconds))) * 10**9
    except (KeyError, ValueError):
        return blob_mtime_ns(parsedate_to_datetime(text))


def parse_listing(body: bytes) -> tuple[list[BlobItem], str]:
    """The items of one List Blobs reply (with delimiter '/'), and its next marker."""
    root = ElementTree.fromstring(body)
    items = []
    for element in root.iterfind("Blobs/*"):
        name_element = element.find("Name")
        assert name_element is not None, "List Blobs: an item without a Name"
        name = name_element.text or ""
        if name_element.get("Encoded") == "true":
            name = unquote(name)
        if element.tag == "BlobPrefix":
            items.append(BlobItem(name, True))
            continue
        properties = element.find("Properties")
        assert properties is not None, "List Blobs: a blob without Properties"
        metadata = {child.tag.lower(): child.text or ""
                    for child in element.iterfind("Metadata/*")}
        is_dir = metadata.get(FOLDER_MARKER_KEY, "").lower() == "true"
        ctime_ns = _http_date_ns(properties.findtext("Last-Modified"))
        if is_dir:
            name, size, etag = name + "/", 0, None
        else:
            size = int(properties.findtext("Content-Length") or 0)
            etag = bare_etag(properties.findtext("Etag"))
        if not metadata:
            items.append(BlobItem(name, is_dir, size, ctime_ns, etag, None, None, None, None,
                                  ctime_ns))
            continue
        kept_mtime = parse_mtime(metadata.get(MTIME_KEY))
        mtime_ns = ctime_ns if kept_mtime is None else kept_mtime
        if posix.KEYS.isdisjoint(metadata):
            items.append(BlobItem(name, is_dir, size, mtime_ns, etag, None, None, None, None,
                                  ctime_ns))
            continue
        kept = posix.from_metadata(metadata)
        items.append(BlobItem(name, is_dir, size, mtime_ns, etag, kept.mode, kept.uid,
                              kept.gid, parse_mtime(metadata.get(posix.ATIME_KEY)), ctime_ns,
                              kept.is_link and not is_dir, 0 if is_dir else kept.special,
                              kept.rdev))
    return items, root.findtext("NextMarker") or ""


def answer_mtime_ns(last_modified: str | None, metadata: Mapping[str, str] | None) -> int:
    """blob_mtime_ns of an answer's Last-Modified header and the blob's metadata."""
    kept = parse_mtime((metadata or {}).get(MTIME_KEY))
    return kept if kept is not None else _http_date_ns(last_modified)


def item_from_headers(blob: str, headers: Mapping[str, str], size: int) -> BlobItem:
    """The blob as a GET's answer describes it."""
    kept = headers.get(f"x-ms-meta-{MTIME_KEY}")
    return BlobItem(blob, False, size, answer_mtime_ns(
        headers.get("Last-Modified"), {MTIME_KEY: kept} if kept else None),
        bare_etag(headers.get("ETag")))


def bare_etag(value: object) -> str | None:
    """ETags without their quotes: listings give them bare, GET and HEAD quoted. (The
    SDK's results type their values loosely: anything but a string is no ETag.)"""
    if not isinstance(value, str):
        return None
    return value.strip('"') if value else value


def is_folder_marker(props: Any) -> bool:
    """Whether an SDK BlobProperties or listing item is a folder's marker blob."""
    metadata = props.metadata or {}
    return metadata.get(FOLDER_MARKER_KEY, "").lower() == "true"

