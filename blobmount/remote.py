"""One container of one storage account, through the azure-storage-blob SDK.

Every method here blocks (the SDK is synchronous): callers in trio run them through
`trio.to_thread.run_sync`. Every SDK exception leaves this module as a
`RemoteError` subclass with a one-line, redacted message.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import datetime as dt
import hashlib
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, unquote
from xml.etree import ElementTree

import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    ContentSettings,
    ExponentialRetry,
    generate_blob_sas,
    generate_container_sas,
)
from azure.storage.blob._generated.models import SourceModifiedAccessConditions

from . import posix
from .access import (
    AZCOPY_SAS_LIFETIME,
    COPY_SAS_LIFETIME,
    DELEGATION_KEY_LIFETIME,
    SAS_CLOCK_SKEW,
    AzcopyAccess,
    azcopy_login,
    sas_lifetime,
    service_time,
    trust_args,
)
from .config import AZURITE_KEY, Account
from .errors import (
    RemoteAuthError,
    RemoteConflict,
    RemoteCorrupt,
    RemoteError,
    RemoteNotFound,
    RemoteUnreachable,
    RemoteUnsupported,
)
from .log import redact, register_secret
from .metrics import Metrics

log = logging.getLogger(__name__)

FOLDER_MARKER_KEY = "hdi_isfolder"
# A file's modification time as set through the mount (write, utimens), in rclone's
# format (RFC 3339 with nanoseconds, UTC), so rclone shows the same time.
MTIME_KEY = "mtime"
# A download whose bytes do not match the blob's Content-MD5 is tried this many times.
DOWNLOAD_TRIES = 2
# The start-up check retries once: a wrong endpoint fails within a few seconds.
CHECK_RETRIES = 1
# Retries of a call after its first try. With the default remote_timeout of 10 s, a
# call to an account that does not answer at all fails after about 32 s (three tries of
# 10 s, and the waits between them); one whose connections are refused, after 1.5 s.
RETRIES = 2
# Waits between tries: about 0.5 s, 1 s, 2 s ... doubling up to a minute, each drawn
# from a window of +-50% so that many clients do not retry in step.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
# After a call found the account unreachable, what is already known (cached files, old
# listings) is served for this many seconds without asking it again.
OFFLINE_GRACE = 15.0
# Statuses that say "try again later"; the SDK itself retries 408 and 5xx but not 429.
THROTTLED = 429
# Bytes read from a response at a time: the SDK's own choice when it makes the transport.
RESPONSE_BLOCK = 256 * 1024
# Blobs up to this size come by one bare GET (see Remote._get_whole).
SMALL_GET_MAX = 4 * 1024 * 1024
# Larger ones come in ranges of these sizes (see range_size), hashed in blocks.
RANGE_MIN = 4 * 1024 * 1024
RANGE_MAX = 64 * 1024 * 1024
HASH_BLOCK = 1024 * 1024
RANGE_NOT_SATISFIABLE = 416
PRECONDITION_FAILED = 412
# The largest range whose own MD5 the service computes (x-ms-range-get-content-md5).
RANGE_MD5_MAX = 4 * 1024 * 1024
# Pooled connections per account: parallel transfers times the SDK's requests each.
POOL_SIZE = 64


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


#: Azure's answers when an account does not do blob index tags.
_UNSUPPORTED_CODES = ("FeatureNotSupported", "NotImplemented", "FeatureNotYetSupported")
#: Tries of a read-modify-write of metadata that another writer keeps changing.
METADATA_TRIES = 5


def _mtime_ns(when: dt.datetime | None, metadata: dict[str, str] | None = None) -> int:
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
    _mtime_ns(parsedate_to_datetime(text)) gives, in a fifth of its time: a listing
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
        return _mtime_ns(parsedate_to_datetime(text))


def parse_listing(body: bytes) -> tuple[list[BlobItem], str]:
    """The items of one List Blobs reply (with delimiter '/'), and its next marker."""
    root = ElementTree.fromstring(body)
    items = []
    for element in root.iterfind("Blobs/*"):
        name_element = element.find("Name")
        name = name_element.text or ""
        if name_element.get("Encoded") == "true":
            name = unquote(name)
        if element.tag == "BlobPrefix":
            items.append(BlobItem(name, True))
            continue
        properties = element.find("Properties")
        metadata = {child.tag.lower(): child.text or ""
                    for child in element.iterfind("Metadata/*")}
        is_dir = metadata.get(FOLDER_MARKER_KEY, "").lower() == "true"
        ctime_ns = _http_date_ns(properties.findtext("Last-Modified"))
        if is_dir:
            name, size, etag = name + "/", 0, None
        else:
            size = int(properties.findtext("Content-Length") or 0)
            etag = _etag(properties.findtext("Etag"))
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


def _item_from_headers(blob: str, headers: Mapping[str, str], size: int) -> BlobItem:
    """The blob as a GET's answer describes it."""
    modified = headers.get("Last-Modified")
    when = parsedate_to_datetime(modified) if modified else None
    kept = headers.get(f"x-ms-meta-{MTIME_KEY}")
    return BlobItem(blob, False, size, _mtime_ns(when, {MTIME_KEY: kept} if kept else None),
                    _etag(headers.get("ETag")))


def range_size(size: int, concurrency: int) -> int:
    """How much of a blob of `size` bytes one range asks for: an equal share for each
    of `concurrency` connections, so every connection stays busy to the end and each
    request costs the least, between RANGE_MIN and RANGE_MAX."""
    return min(RANGE_MAX, max(RANGE_MIN, -(-size // concurrency)))


def _wait_after_cut(cuts: int, what: str) -> None:
    """Before asking again for an answer cut short `cuts` times: RemoteUnreachable past
    RETRIES, else the backoff."""
    if cuts > RETRIES:
        raise RemoteUnreachable(f"{what}: the answer was cut short {cuts} times")
    log.debug("%s: answer cut short, asking again for what is missing", what)
    time.sleep(backoff(cuts))


def _ignore_progress(_ready: int) -> None:
    pass


def _etag(value: str | None) -> str | None:
    """ETags without their quotes: listings give them bare, GET and HEAD quoted."""
    return value.strip('"') if value else value


def _is_folder_marker(props) -> bool:
    metadata = props.metadata or {}
    return metadata.get(FOLDER_MARKER_KEY, "").lower() == "true"


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...) of a failed call."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.5)


class _Backoff(ExponentialRetry):
    """The storage SDK's retry policy (it retries connection errors, timeouts, 408 and
    5xx but never 403, 404 or 409) with our waits: its own are 15 s, 18 s, 24 s."""

    def get_backoff_time(self, settings: dict) -> float:
        return backoff(settings["count"])


class _ThrottleAwareTransport(RequestsTransport):
    """Turns a 429 into an error the retry policy retries (it retries any AzureError
    raised below it), since the storage SDK would hand a 429 straight back.

    Below the retry policy, it sees every try of every request the SDK makes: the one
    place they are counted (`metrics`)."""

    def __init__(self, endpoint: str, metrics: Metrics | None = None, **options) -> None:
        self._endpoint = endpoint
        self._metrics = metrics
        super().__init__(**options)
        # Each request names what it verifies against (True: certifi's bundle), which
        # wins over the session's `verify`: the environment's bundle must be said here.
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle and "connection_verify" not in options:
            self.connection_config.verify = bundle

    def _init_session(self, session) -> None:
        # Enough pooled connections for every transfer's parallel requests: the default
        # of 10 made each one past it a new connection (and a log warning).
        super()._init_session(session)
        for prefix, adapter in list(session.adapters.items()):
            session.mount(prefix, type(adapter)(max_retries=adapter.max_retries,
                                                pool_maxsize=POOL_SIZE))
        # requests would read the proxy and CA bundle variables (and ~/.netrc) again for
        # every request, 0.4 ms of CPU of a small GET's 1.2 ms; the endpoint is fixed,
        # so they are read once, here.
        session.proxies.update(requests.utils.get_environ_proxies(self._endpoint))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        session.trust_env = False

    def send(self, request, **kwargs):
        if self._metrics is None:
            response = super().send(request, **kwargs)
        else:
            response = self._counted_send(request, **kwargs)
        if response.status_code == THROTTLED:
            error = HttpResponseError(message="the account is throttling requests",
                                      response=response)
            response.close()
            raise error
        return response


    def _counted_send(self, request, **kwargs):
        started = time.perf_counter()
        try:
            response = super().send(request, **kwargs)
        except BaseException:
            self._metrics.remote_request(request.method, request.url, request.headers, None,
                                         time.perf_counter() - started)
            raise
        # Bytes as the headers give them: a body still to be streamed is counted whole.
        received = response.headers.get("Content-Length") if request.method == "GET" else 0
        sent = request.headers.get("Content-Length") if request.method == "PUT" else 0
        self._metrics.remote_request(request.method, request.url, request.headers,
                                     response.status_code, time.perf_counter() - started,
                                     sent=int(sent or 0), received=int(received or 0))
        return response


def _service_client(account: Account, *, timeout: float, retries: int,
                    metrics: Metrics | None = None) -> BlobServiceClient:
    # The timeouts bound each try: connecting, and each wait for the next bytes of an
    # answer (an idle timeout, so a big download is not cut short).
    options = {
        "transport": _ThrottleAwareTransport(account.endpoint, metrics,
                                             connection_timeout=min(timeout, 10.0),
                                             read_timeout=timeout,
                                             connection_data_block_size=RESPONSE_BLOCK),
        "retry_policy": _Backoff(retry_total=retries),
    }
    if account.connection_string:
        return BlobServiceClient.from_connection_string(account.connection_string, **options)
    if account.account_key:
        credential = {"account_name": account.account_name, "account_key": account.account_key}
    elif account.sas_token:
        credential = account.sas_token
    else:
        from azure.identity import DefaultAzureCredential  # optional dependency

        credential = DefaultAzureCredential()
    return BlobServiceClient(account.endpoint, credential=credential, **options)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn SDK exceptions into RemoteError subclasses whose message says `what` failed."""
    try:
        yield
    except (ResourceModifiedError, ResourceExistsError) as exc:
        raise RemoteConflict(f"{what}: changed in the container ({_reason(exc)})") from None
    except ResourceNotFoundError as exc:
        raise RemoteNotFound(f"{what}: not found ({_reason(exc)})") from None
    except ClientAuthenticationError as exc:
        raise RemoteAuthError(f"{what}: access denied ({_reason(exc)})") from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise RemoteAuthError(f"{what}: access denied ({_reason(exc)})") from None
        if exc.status_code == 404:
            raise RemoteNotFound(f"{what}: not found ({_reason(exc)})") from None
        raise RemoteError(f"{what}: HTTP {exc.status_code} ({_reason(exc)})") from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise RemoteUnreachable(f"{what}: cannot reach the account ({_first_line(exc)})") from None
    except AzureError as exc:
        raise RemoteError(f"{what}: {_first_line(exc)}") from None


def _reason(exc: HttpResponseError) -> str:
    # Errors of bare requests (listings, small GETs) carry the code only in a header.
    headers = exc.response.headers if exc.response is not None else {}
    code = (getattr(exc, "error_code", None) or headers.get("x-ms-error-code") or exc.reason
            or exc.status_code)
    # Some codes come as StorageErrorCode members, whose str() is the enum's repr.
    return redact(str(getattr(code, "value", code)))


def _retries(retries: int | None) -> dict[str, int]:
    """Keyword arguments of one SDK call that override the client's retry count."""
    return {} if retries is None else {"retry_total": retries}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


class Remote:
    """One container of an account: list, stat, download, and SAS for AzCopy."""

    def __init__(self, account: Account, container: str, *, timeout: float = 10.0,
                 retries: int = RETRIES, metrics: Metrics | None = None) -> None:
        self.account = account
        self.container = container
        self._service = _service_client(account, timeout=timeout, retries=retries,
                                        metrics=metrics)
        self._client: ContainerClient = self._service.get_container_client(container)
        self.label = f"{account.account_name}/{container}"
        #: when a call last found the account not answering; None once one got through
        self.unreachable_at: float | None = None
        #: how AzCopy logs in, for an account known by an identity alone (None: it cannot)
        self.azcopy_login = (azcopy_login(os.environ) if not self._key() and not
                             account.sas_token else None)
        register_secret((self.azcopy_login or {}).get("AZCOPY_SPA_CLIENT_SECRET"))
        self._delegation_key = None
        self._delegation_key_lock = threading.Lock()
        self._hns: bool | None = None

    def close(self) -> None:
        self._service.close()

    def offline(self) -> bool:
        """Whether a call found the account unreachable within the last OFFLINE_GRACE
        seconds (and none got through since): checks of what is known can skip it."""
        return (self.unreachable_at is not None
                and time.monotonic() - self.unreachable_at < OFFLINE_GRACE)

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """translate_errors, noting whether the account answered."""
        try:
            with translate_errors(what):
                yield
        except RemoteUnreachable:
            self.unreachable_at = time.monotonic()
            raise
        except RemoteError:
            self.unreachable_at = None  # it answered, if only with an error
            raise
        self.unreachable_at = None

    def check(self) -> None:
        """Fail with a clear RemoteError unless the container can be listed."""
        with self._call(f"container {self.label}"):
            pages = self._client.list_blobs(results_per_page=1,
                                            retry_total=CHECK_RETRIES).by_page()
            next(pages, None)

    def create_if_missing(self) -> None:
        with self._call(f"container {self.label}"), contextlib.suppress(
            HttpResponseError
        ):
            self._client.create_container()

    def list_pages(self, prefix: str, page_size: int = 5000) -> Iterator[list[BlobItem]]:
        """The direct children of `prefix`, one page at a time, in name order.

        Marker blobs (metadata hdi_isfolder=true) come back as folders. The SDK's own
        listing spends most of its time turning XML into objects (about 0.5 ms a blob,
        five times what the request costs), so the List Blobs reply is read here
        directly, through the SDK's pipeline (auth, retries, timeouts).
        """
        marker = ""
        with self._call(f"listing {self.label}/{prefix}"):
            while True:
                params = {"restype": "container", "comp": "list", "delimiter": "/",
                          "include": "metadata", "maxresults": str(page_size)}
                if prefix:
                    params["prefix"] = prefix
                if marker:
                    params["marker"] = marker
                response = self._client._client._send_request(
                    HttpRequest("GET", self._client.url, params=params))
                response.raise_for_status()
                items, marker = parse_listing(response.read())
                yield items
                if not marker:
                    return

    def properties(self, blob: str, *, retries: int | None = None) -> BlobItem:
        """Size, time and ETag by one HEAD (`retries` overrides the client's count)."""
        with self._call(f"blob {self.label}/{blob}"):
            props = self._client.get_blob_client(blob).get_blob_properties(
                **_retries(retries))
        return BlobItem(blob, _is_folder_marker(props), props.size,
                        _mtime_ns(props.last_modified, props.metadata), _etag(props.etag))

    def head(self, blob: str, *, retries: int | None = None) -> BlobProperties:
        """The blob's full property set and metadata, by one HEAD (`retries` overrides
        the client's count)."""
        with self._call(f"blob {self.label}/{blob}"):
            props = self._client.get_blob_client(blob).get_blob_properties(
                **_retries(retries))
        settings = props.content_settings
        md5 = settings.content_md5 if settings else None
        return BlobProperties(
            name=blob, size=props.size, etag=_etag(props.etag) or "",
            mtime_ns=_mtime_ns(props.last_modified), last_modified=props.last_modified,
            content_type=settings.content_type if settings else None,
            content_md5=bytes(md5).hex() if md5 else None,
            access_tier=str(getattr(props.blob_tier, "value", props.blob_tier))
            if props.blob_tier else None,
            metadata=dict(props.metadata or {}))

    def update_metadata(self, blob: str, changes: Mapping[str, str | None]) -> tuple[str, str]:
        """Set (value) or remove (None) metadata keys, keeping every other key.

        Keys match case-insensitively, as Azure treats them. A read-modify-write made
        conditional on the ETag, retried when another writer got in between. Returns
        the blob's ETag before and after: setting metadata makes a new ETag for the
        same bytes.
        """
        with self._call(f"metadata of {self.label}/{blob}"):
            client = self._client.get_blob_client(blob)
            for attempt in range(METADATA_TRIES):
                props = client.get_blob_properties()
                metadata = dict(props.metadata or {})
                for key, value in changes.items():
                    for existing in [k for k in metadata if k.lower() == key.lower()]:
                        del metadata[existing]
                    if value is not None:
                        metadata[key] = value
                try:
                    result = client.set_blob_metadata(
                        metadata, etag=props.etag, match_condition=MatchConditions.IfNotModified)
                except ResourceModifiedError:
                    if attempt + 1 == METADATA_TRIES:
                        raise
                    continue
                return _etag(props.etag) or "", _etag(result.get("etag")) or ""
        raise RemoteConflict(f"metadata of {self.label}/{blob}: changed while being set")

    def tags(self, blob: str) -> dict[str, str]:
        """The blob's index tags; RemoteUnsupported where the account has none."""
        with self._tags_errors(blob):
            return dict(self._client.get_blob_client(blob).get_blob_tags() or {})

    def update_tags(self, blob: str, changes: Mapping[str, str | None]) -> dict[str, str]:
        """Set (value) or remove (None) index tags, keeping the others; the new tags."""
        with self._tags_errors(blob):
            client = self._client.get_blob_client(blob)
            tags = dict(client.get_blob_tags() or {})
            for key, value in changes.items():
                if value is None:
                    tags.pop(key, None)
                else:
                    tags[key] = value
            client.set_blob_tags(tags)
            return tags

    @contextlib.contextmanager
    def _tags_errors(self, blob: str) -> Iterator[None]:
        with self._call(f"tags of {self.label}/{blob}"):
            try:
                yield
            except HttpResponseError as exc:
                code = str(getattr(exc.error_code, "value", exc.error_code) or "")
                if exc.status_code == 501 or code.startswith(_UNSUPPORTED_CODES):
                    raise RemoteUnsupported(
                        f"tags of {self.label}/{blob}: the account has no blob index"
                        f" tags ({code or exc.status_code})") from None
                raise

    def _blob_request_url(self, blob: str) -> str:
        base, _, query = self._client.url.partition("?")
        return f"{base}/{quote(blob, safe='~/')}" + (f"?{query}" if query else "")

    def _get(self, url: str, headers: Mapping[str, str], what: str,
             ) -> tuple[Mapping[str, str], bytes]:
        """One bare GET through the pipeline (auth, retries, timeouts): the answer's
        headers and body. A body cut short is asked for again, up to RETRIES times (the
        pipeline retries only failures before the body)."""
        cuts = 0
        while True:
            response = self._send_get(url, headers)
            try:
                body = b"".join(response.iter_bytes())
                complete = len(body) == int(response.headers.get("Content-Length", len(body)))
            except (ServiceResponseError, IncompleteReadError):  # body cut short, or stalled
                complete = False
            finally:
                response.close()
            if complete:
                return response.headers, body
            cuts += 1
            _wait_after_cut(cuts, what)

    def _get_whole(self, blob: str, destination: Path) -> tuple[BlobItem, str | None, str]:
        """A small blob by one GET: the SDK's downloader costs more CPU than the request
        (1.8 ms against 1.1 ms a 4 KiB blob). The blob as read, its Content-MD5 (None:
        it has none) and the bytes' MD5."""
        headers, body = self._get(self._blob_request_url(blob), {},
                                  f"download of {self.label}/{blob}")
        with open(destination, "wb") as out:
            out.write(body)
        md5 = headers.get("Content-MD5") or headers.get("x-ms-blob-content-md5")
        return (_item_from_headers(blob, headers, len(body)),
                base64.b64decode(md5).hex() if md5 else None,
                hashlib.md5(body, usedforsecurity=False).hexdigest())

    def _get_ranges(self, blob: str, destination: Path, size: int | None, concurrency: int,
                    on_progress: Callable[[int], None],
                    ) -> tuple[BlobItem, str | None, str | None]:
        """A large blob in `concurrency` ranges side by side (see range_size), each
        streamed into place, so that the file's first bytes can be read while the rest
        arrive: `on_progress(n)` says the first n bytes are written. A thread of its own
        hashes that prefix as it grows. Ranges after the first ask for the version the
        first one got (If-Match); a range cut short asks again for what it lacks. The
        blob as read, its Content-MD5 and the bytes' MD5 (both None: it has none)."""
        url, what = self._blob_request_url(blob), f"download of {self.label}/{blob}"
        step = range_size(size or 0, concurrency)
        try:
            first = self._send_get(url, {"x-ms-range": f"bytes=0-{step - 1}"})
        except HttpResponseError as exc:
            if exc.status_code != RANGE_NOT_SATISFIABLE:
                raise
            return self._get_whole(blob, destination)  # empty since it was listed
        headers = first.headers
        total = int(headers.get("Content-Range", "/0").rpartition("/")[2])
        # On a range, Content-MD5 would be the range's (if asked for): the blob's is here.
        md5 = headers.get("x-ms-blob-content-md5")
        if_match = {"If-Match": headers.get("ETag", "*")}
        starts = list(range(0, total, step))
        written = dict.fromkeys(starts, 0)  # range start -> bytes of it written
        state = threading.Condition()
        prefix = 0     # the first `prefix` bytes are written
        failed = False
        digest = hashlib.md5(usedforsecurity=False)

        with open(destination, "w+b") as out:  # read too: the hash reads back
            fd = out.fileno()

            def wrote(start: int, count: int) -> None:
                nonlocal prefix
                with state:
                    written[start] += count
                    base, moved = prefix - prefix % step, prefix  # the first range not all in
                    while base < total:
                        moved = base + written[base]
                        if moved < min(base + step, total):
                            break
                        base += step
                    if moved > prefix:
                        prefix = moved
                        state.notify_all()
                        on_progress(moved)

            def fetch(start: int) -> None:
                nonlocal failed
                try:
                    end = min(start + step, total)
                    self._stream_range(url, fd, start, end, if_match, what, wrote,
                                       first if start == 0 else None, lambda: failed)
                except BaseException:
                    with state:
                        failed = True
                        state.notify_all()
                    raise

            def hash_prefix() -> None:
                done = 0
                while done < total:
                    with state:
                        while prefix <= done and not failed:
                            state.wait()
                        if failed:
                            return
                        upto = prefix
                    while done < upto:
                        block = os.pread(fd, min(HASH_BLOCK, upto - done), done)
                        digest.update(block)
                        done += len(block)

            with ThreadPoolExecutor(concurrency + 1) as pool:
                # A blob with no Content-MD5 (most put in blocks) has nothing to match.
                hashing = pool.submit(hash_prefix) if md5 else None
                for _ in pool.map(fetch, starts):
                    pass
                if hashing is not None:
                    hashing.result()
            if not starts:
                first.close()
        if not md5:
            return _item_from_headers(blob, headers, total), None, None
        return (_item_from_headers(blob, headers, total), base64.b64decode(md5).hex(),
                digest.hexdigest())

    def _send_get(self, url: str, headers: Mapping[str, str]) -> HttpResponse:
        """A bare GET through the pipeline, its body not read yet; an error raised."""
        response = self._client._client._send_request(
            HttpRequest("GET", url, headers=dict(headers)), stream=True)
        if response.status_code >= 400:
            response.read()  # the error's text and code are in the body
            response.close()
        response.raise_for_status()
        return response

    def _stream_range(self, url: str, fd: int, start: int, end: int,
                      if_match: Mapping[str, str], what: str,
                      wrote: Callable[[int, int], None], response: HttpResponse | None,
                      stop: Callable[[], bool]) -> None:
        """Write the blob's bytes [start, end) at their place in `fd`, telling
        `wrote(start, count)` as they land; a body cut short is asked for again from
        where it stopped, up to RETRIES times. `response`: the first try, already sent."""
        position, cuts = start, 0
        while position < end:
            if response is None:
                response = self._send_get(
                    url, {"x-ms-range": f"bytes={position}-{end - 1}", **if_match})
            try:
                for block in response.iter_bytes():
                    if stop():
                        return
                    block = block[:end - position]
                    os.pwrite(fd, block, position)
                    position += len(block)
                    wrote(start, len(block))
            except (ServiceResponseError, IncompleteReadError):  # cut short, or stalled
                pass
            finally:
                response.close()
                response = None
            if position < end:
                cuts += 1
                _wait_after_cut(cuts, what)

    def read_blocks(self, blob: str, fd: int, start: int, end: int, etag: str,
                    block: int) -> list[int]:
        """Write the bytes [start, end) of the blob's version `etag` at their place in
        `fd` by one ranged GET; the CRC-32 of each `block`-sized piece (a cheap check
        that the bytes are still on the disk later; the MD5 checks them on the wire).

        A range of at most RANGE_MD5_MAX is checked against the MD5 the service
        computes of it: a mismatch is asked for again, then RemoteCorrupt. Another
        version in the container: RemoteConflict (If-Match). A body cut short is asked
        for again, up to RETRIES times."""
        what = f"read of {self.label}/{blob}"
        headers = {"x-ms-range": f"bytes={start}-{end - 1}", "If-Match": f'"{etag}"'}
        checked = end - start <= RANGE_MD5_MAX
        if checked:
            headers["x-ms-range-get-content-md5"] = "true"
        url, cuts, bad = self._blob_request_url(blob), 0, 0
        while True:
            with self._call(what):
                try:
                    response = self._send_get(url, headers)
                except HttpResponseError as exc:
                    if exc.status_code == PRECONDITION_FAILED:
                        raise RemoteConflict(f"{what}: changed in the container since it"
                                             " was opened") from None
                    raise
                whole, pieces, complete = self._write_range(response, fd, start, end, block)
            if not complete:
                cuts += 1
                _wait_after_cut(cuts, what)
                continue
            expected = response.headers.get("Content-MD5")
            if not checked or (expected and base64.b64decode(expected) == whole):
                return pieces
            bad += 1
            log.warning("%s: bytes %d-%d do not match their MD5%s", what, start, end - 1,
                        "; trying again" if bad < DOWNLOAD_TRIES else "")
            if bad >= DOWNLOAD_TRIES:
                raise RemoteCorrupt(f"{what}: bytes {start}-{end - 1} do not match their"
                                    f" MD5 (tried {bad} times)")

    @staticmethod
    def _write_range(response: HttpResponse, fd: int, start: int, end: int, block: int,
                     ) -> tuple[bytes, list[int], bool]:
        """Stream a range's body into `fd` at its place: the MD5 of all of it, the
        CRC-32 of each `block`-sized piece, and whether it came whole."""
        whole = hashlib.md5(usedforsecurity=False)
        pieces = [0] * -(-(end - start) // block)
        position = start
        try:
            for data in response.iter_bytes():
                chunk = memoryview(data)[:end - position]
                os.pwrite(fd, chunk, position)
                whole.update(chunk)
                while chunk:  # a chunk may straddle the edge of a block
                    index = (position - start) // block
                    take = min(len(chunk), start + (index + 1) * block - position)
                    pieces[index] = zlib.crc32(chunk[:take], pieces[index])
                    chunk, position = chunk[take:], position + take
        except (ServiceResponseError, IncompleteReadError):  # cut short, or stalled
            pass
        finally:
            response.close()
        return whole.digest(), pieces, position >= end

    def download(self, blob: str, destination: Path, *, size: int | None = None,
                 concurrency: int = 4, on_progress: Callable[[int], None] | None = None,
                 ) -> BlobItem:
        """Write the blob's bytes to `destination` (created or truncated; not fsynced,
        which is the cache's business).

        A blob listed at `size` up to SMALL_GET_MAX comes by one GET, a larger one in
        ranges side by side. Where the blob has a Content-MD5, the bytes written must
        match it: a mismatch is downloaded again, then RemoteCorrupt. Returns the
        properties of the version that was read, so the caller records the ETag of
        exactly these bytes.

        With `on_progress`, the file's first bytes can be read while the rest arrive:
        it is called (from worker threads) with n whenever the first n bytes are
        written. Such a download is tried once, since bytes already read cannot be
        taken back.
        """
        tries = 1 if on_progress else DOWNLOAD_TRIES
        for attempt in range(tries):
            with self._call(f"download of {self.label}/{blob}"):
                if size is not None and size <= SMALL_GET_MAX:
                    item, expected, actual = self._get_whole(blob, destination)
                else:
                    item, expected, actual = self._get_ranges(
                        blob, destination, size, concurrency, on_progress or _ignore_progress)
            if expected is None or actual == expected:
                return item
            log.warning("download of %s/%s: the bytes do not match its Content-MD5%s",
                        self.label, blob, "; trying again" if attempt + 1 < tries else "")
        destination.unlink(missing_ok=True)
        raise RemoteCorrupt(f"download of {self.label}/{blob}: the bytes do not match the"
                            f" blob's Content-MD5 {expected} (tried {tries} times)")

    def upload(self, blob: str, source: Path, *, base_etag: str, md5: str,
               metadata: dict[str, str] | None = None, concurrency: int = 4,
               retries: int | None = None) -> BlobItem:
        """Put the file's bytes as `blob`, only if the blob is still the version
        `base_etag` ('' = only if there is no blob); RemoteConflict otherwise. `md5`
        (hex, see file_md5) becomes the blob's Content-MD5.

        `retries` overrides the client's retry count for this call (the upload journal
        retries on its own schedule, so it asks for few here).
        """
        options: dict = {"overwrite": False}
        if base_etag:
            options = {"overwrite": True, "etag": base_etag,
                       "match_condition": MatchConditions.IfNotModified}
        options.update(_retries(retries))
        with self._call(f"upload of {self.label}/{blob}"), open(source, "rb") as data:
            result = self._client.get_blob_client(blob).upload_blob(
                data, length=os.fstat(data.fileno()).st_size, metadata=metadata,
                content_settings=ContentSettings(content_md5=bytearray.fromhex(md5)),
                max_concurrency=concurrency, **options)
        return BlobItem(blob, False, source.stat().st_size,
                        _mtime_ns(result.get("last_modified"), metadata), _etag(result.get("etag")))

    def read_range(self, blob: str, offset: int, length: int | None) -> bytes:
        """`length` bytes of the blob from `offset` (None: to its end), by one GET."""
        with self._call(f"read of {self.label}/{blob}"):
            return self._client.get_blob_client(blob).download_blob(
                offset=offset, length=length).readall()

    def set_tier(self, blob: str, tier: str) -> None:
        """Set the blob's access tier (Hot, Cool, Cold, Archive)."""
        with self._call(f"tier of {self.label}/{blob}"):
            self._client.get_blob_client(blob).set_standard_blob_tier(tier)

    def delete(self, blob: str) -> None:
        """Delete a blob; one that is already gone is fine."""
        with self._call(f"delete of {self.label}/{blob}"), contextlib.suppress(
            ResourceNotFoundError
        ):
            self._client.delete_blob(blob)

    def make_folder(self, prefix: str, *, exclusive: bool = False,
                    metadata: Mapping[str, str] | None = None) -> BlobItem:
        """Create the zero-length marker blob that keeps an empty folder (hdi_isfolder)
        and its `metadata`; `exclusive`: RemoteConflict if a blob of that name exists."""
        name = prefix.rstrip("/")
        with self._call(f"mkdir {self.label}/{name}"):
            result = self._client.get_blob_client(name).upload_blob(
                b"", metadata={**(metadata or {}), FOLDER_MARKER_KEY: "true"},
                overwrite=not exclusive)
        return BlobItem(name + "/", True, 0, _mtime_ns(result.get("last_modified")))

    def put_small(self, blob: str, data: bytes, metadata: Mapping[str, str]) -> BlobItem:
        """Put a small blob (a symlink) that must not exist yet: RemoteConflict if it does."""
        with self._call(f"upload of {self.label}/{blob}"):
            result = self._client.get_blob_client(blob).upload_blob(
                data, metadata=dict(metadata), overwrite=False)
        return BlobItem(blob, False, len(data), _mtime_ns(result.get("last_modified"), metadata),
                        _etag(result.get("etag")))

    def read_small(self, blob: str) -> bytes:
        """The whole content of a small blob (a symlink's target)."""
        with self._call(f"blob {self.label}/{blob}"):
            return self._client.get_blob_client(blob).download_blob().readall()

    def list_files(self, prefix: str) -> Iterator[BlobItem]:
        """Every blob under `prefix` at any depth, in name order, with size and ETag.

        Folder marker blobs come back with is_dir set.
        """
        with self._call(f"listing {self.label}/{prefix}"):
            for blob in self._client.list_blobs(name_starts_with=prefix or None,
                                                include=["metadata"]):
                if _is_folder_marker(blob):
                    yield BlobItem(blob.name + "/", True, mtime_ns=_mtime_ns(blob.last_modified))
                else:
                    yield BlobItem(blob.name, False, blob.size, _mtime_ns(blob.last_modified),
                                   _etag(blob.etag))

    def list_all(self, prefix: str) -> list[str]:
        """Every blob name under `prefix`, at any depth (for folder renames)."""
        with self._call(f"listing {self.label}/{prefix}"):
            return [blob.name for blob in self._client.list_blobs(name_starts_with=prefix)]

    def copy(self, source: str, destination: str, *, poll: float = 0.2) -> str | None:
        """Server-side copy of `source` to `destination`, waiting until it is done;
        the ETag of the copy."""
        with self._call(f"copy of {self.label}/{source} to {destination}"):
            source_url = f"{self.blob_url(source)}?{self._copy_source_sas(source)}"
            target = self._client.get_blob_client(destination)
            copy = target.start_copy_from_url(source_url)
            status, etag = copy.get("copy_status"), copy.get("etag")
            while status == "pending":
                time.sleep(poll)
                props = target.get_blob_properties()
                status, etag = props.copy.status, props.etag
            if status != "success":
                raise RemoteError(f"copy of {self.label}/{source}: {status}")
        return _etag(etag)

    def blob_url(self, blob: str = "") -> str:
        """URL of a blob (or, with blob='', of the container), without credentials."""
        base = f"{self.account.endpoint}/{self.container}"
        return f"{base}/{quote(blob, safe='/')}" if blob else base

    def _key(self) -> str | None:
        return self.account.account_key or _key_from_connection_string(
            self.account.connection_string)

    @property
    def azcopy_can_sign(self) -> bool:
        """Whether AzCopy jobs can be given a SAS (uploads by AzCopy need one)."""
        return bool(self._key() or self.account.sas_token)

    @property
    def azcopy_usable(self) -> bool:
        """Whether AzCopy can reach the container: by a SAS, or by logging in as the
        account's identity (see azcopy_login). Otherwise transfers go through the SDK."""
        return self.azcopy_can_sign or self.azcopy_login is not None

    def azcopy_blob(self, blob: str, *, size: int | None) -> AzcopyAccess:
        """How an AzCopy job downloads one blob of `size` bytes: as the identity, with no
        SAS on its command line; else with a SAS that reads that blob only and lasts
        about as long as the job (sas_lifetime)."""
        if self.azcopy_login is not None:
            return self._logged_in(self.blob_url(blob))
        sas = self.sas_for_azcopy(blob=blob, lifetime=sas_lifetime(size))
        return AzcopyAccess(f"{self.blob_url(blob)}?{sas}", {})

    def azcopy_folder(self, folder: str, *, size: int | None) -> AzcopyAccess:
        """How an AzCopy job downloads listed blobs under `folder` ('' or 'a/b/'): as
        the identity; else with a read-only SAS (no listing: the job's files are
        listed) for that folder where the account has a hierarchical namespace, for
        the container where it has not (Azure has no narrower SAS for several blobs)."""
        url = self.blob_url(folder.rstrip("/")) if folder else self.blob_url()
        if self.azcopy_login is not None:
            return self._logged_in(url)
        key = self._key()
        if key is None:
            return AzcopyAccess(f"{url}?{self.sas_for_azcopy()}", {})
        now = dt.datetime.now(dt.UTC)
        times = {"start": now - SAS_CLOCK_SKEW, "expiry": now + sas_lifetime(size)}
        if folder and self._hierarchical():
            sas = generate_blob_sas(self.account.account_name, self.container,
                                    folder.strip("/"), account_key=key, is_directory=True,
                                    permission=BlobSasPermissions(read=True), **times)
        else:
            sas = generate_container_sas(self.account.account_name, self.container,
                                         account_key=key,
                                         permission=ContainerSasPermissions(read=True),
                                         **times)
        return AzcopyAccess(f"{url}?{sas}", {})

    def _logged_in(self, url: str) -> AzcopyAccess:
        assert self.azcopy_login is not None
        return AzcopyAccess(url, dict(self.azcopy_login), trust_args(self.account.endpoint))

    def _hierarchical(self) -> bool:
        """Whether the account has a hierarchical namespace (asked once; False when the
        question fails: a container SAS then works where a folder's would not)."""
        if self._hns is None:
            try:
                with self._call(f"account {self.account.account_name}"):
                    info = self._service.get_account_information()
                self._hns = bool(info.get("is_hns_enabled"))
            except RemoteError as exc:
                log.info("cannot tell whether %s has a hierarchical namespace: %s",
                         self.label, exc)
                self._hns = False
        return self._hns

    def sas_for_azcopy(self, *, blob: str | None = None, write: bool = False,
                       lifetime: dt.timedelta = AZCOPY_SAS_LIFETIME) -> str:
        """A short-lived SAS token for one AzCopy job: one blob, or the container.

        Read-only unless `write` (then create and write, no read); valid for `lifetime`
        (azfuse's `url` asks for 30 days). Made from the account key where there is one;
        otherwise the account's own SAS token is all we have.
        """
        key = self._key()
        if not key:
            if self.account.sas_token:
                return self.account.sas_token
            raise RemoteAuthError(
                f"account {self.account.name}: AzCopy needs an account key or a SAS token"
            )
        now = dt.datetime.now(dt.UTC)
        times = {"start": now - SAS_CLOCK_SKEW, "expiry": now + lifetime}
        if blob is not None:
            permission = BlobSasPermissions(read=not write, write=write, create=write)
            return generate_blob_sas(self.account.account_name, self.container, blob,
                                     account_key=key, permission=permission, **times)
        permission = ContainerSasPermissions(read=True, list=True, write=write, create=write)
        return generate_container_sas(self.account.account_name, self.container,
                                      account_key=key, permission=permission, **times)

    def _copy_source_sas(self, blob: str) -> str:
        """A SAS that reads `blob`, for the service to copy it: signed with the account
        key, or the account's own SAS; for an account known by an identity alone, a user
        delegation SAS, signed with a key the identity asks the service for."""
        if self._key() or self.account.sas_token:
            return self.sas_for_azcopy(blob=blob, lifetime=COPY_SAS_LIFETIME)
        now = dt.datetime.now(dt.UTC)
        return generate_blob_sas(self.account.account_name, self.container, blob,
                                 user_delegation_key=self._user_delegation_key(now),
                                 permission=BlobSasPermissions(read=True),
                                 start=now - SAS_CLOCK_SKEW, expiry=now + COPY_SAS_LIFETIME)

    def _user_delegation_key(self, now: dt.datetime):
        """A user delegation key valid for at least COPY_SAS_LIFETIME more; one is kept
        and reused (asked for outside the lock: no lock is held across a call)."""
        with self._delegation_key_lock:
            held = self._delegation_key
        if held is not None and service_time(held.signed_expiry) - now > COPY_SAS_LIFETIME:
            return held
        fresh = self._service.get_user_delegation_key(now - SAS_CLOCK_SKEW,
                                                      now + DELEGATION_KEY_LIFETIME)
        with self._delegation_key_lock:
            self._delegation_key = fresh
        return fresh

    # -- edits by blocks (patch.py) --------------------------------------------------

    def snapshot(self, blob: str, etag: str) -> str:
        """Take a snapshot of the blob's version `etag` (RemoteConflict if the blob is
        another now); the snapshot's time stamp, which names it."""
        with self._call(f"snapshot of {self.label}/{blob}"):
            result = self._client.get_blob_client(blob).create_snapshot(
                etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
        return str(result["snapshot"])

    def delete_snapshot(self, blob: str, snapshot: str) -> None:
        """Delete one snapshot of a blob; one already gone is fine."""
        with self._call(f"delete of a snapshot of {self.label}/{blob}"), contextlib.suppress(
                ResourceNotFoundError):
            self._client.get_blob_client(blob, snapshot=snapshot).delete_blob()

    def snapshot_source(self, blob: str, snapshot: str) -> str:
        """The URL Put Block From URL reads a snapshot by: with a SAS of that snapshot
        alone, read-only, for AZCOPY_SAS_LIFETIME (or the account's own SAS token)."""
        key = self._key()
        if key:
            now = dt.datetime.now(dt.UTC)
            token = generate_blob_sas(
                self.account.account_name, self.container, blob, snapshot=snapshot,
                account_key=key, permission=BlobSasPermissions(read=True),
                start=now - dt.timedelta(minutes=5), expiry=now + AZCOPY_SAS_LIFETIME)
        elif self.account.sas_token:
            token = self.account.sas_token.lstrip("?")
        else:
            raise RemoteAuthError(f"account {self.account.name}: no key or SAS token to"
                                  " copy blocks with")
        return f"{self.blob_url(blob)}?snapshot={quote(snapshot)}&{token}"

    def stage_block_from_url(self, blob: str, block_id: str, source_url: str, offset: int,
                             length: int, source_etag: str, *,
                             retries: int | None = None) -> None:
        """Stage bytes [offset, offset + length) of `source_url` (of version
        `source_etag`: If-Match) as an uncommitted block of `blob`, server-side."""
        with self._call(f"copy of blocks of {self.label}/{blob}"):
            self._client.get_blob_client(blob).stage_block_from_url(
                block_id, source_url, source_offset=offset, source_length=length,
                source_modified_access_conditions=SourceModifiedAccessConditions(
                    source_if_match=f'"{source_etag}"'), **_retries(retries))

    def stage_block(self, blob: str, block_id: str, data: bytes, *,
                    retries: int | None = None) -> None:
        """Stage `data` as an uncommitted block of `blob` (its MD5 checked on arrival)."""
        with self._call(f"upload of blocks of {self.label}/{blob}"):
            self._client.get_blob_client(blob).stage_block(
                block_id, data, length=len(data), validate_content=True, **_retries(retries))

    def commit_blocks(self, blob: str, block_ids: list[str], *, base_etag: str,
                      content_type: str | None, md5: str | None, metadata: dict[str, str],
                      retries: int | None = None) -> str:
        """Make the staged blocks, in this order, the blob's bytes, only if the blob is
        still the version `base_etag` ('' = only if there is no blob): RemoteConflict
        otherwise. The new ETag."""
        condition = ({"etag": f'"{base_etag}"', "match_condition": MatchConditions.IfNotModified}
                     if base_etag else {"match_condition": MatchConditions.IfMissing})
        settings = ContentSettings(content_type=content_type,
                                   content_md5=bytearray.fromhex(md5) if md5 else None)
        with self._call(f"commit of {self.label}/{blob}"):
            result = self._client.get_blob_client(blob).commit_block_list(
                [BlobBlock(block_id) for block_id in block_ids], content_settings=settings,
                metadata=metadata, **condition, **_retries(retries))
        return _etag(result.get("etag")) or ""

    def committed_blocks(self, blob: str) -> list[str]:
        """The IDs of the blob's committed blocks, in order."""
        with self._call(f"block list of {self.label}/{blob}"):
            committed, _ = self._client.get_blob_client(blob).get_block_list("committed")
        return [block.id for block in committed or []]

    def block_list(self, blob: str, snapshot: str = "") -> list[tuple[str, int]]:
        """The committed blocks of the blob (of that snapshot of it), in order: each
        one's name as the service gives it (the base64 of its ID) and its size. Empty
        for a blob put in one request."""
        client = self._client.get_blob_client(blob, snapshot=snapshot or None)
        with self._call(f"block list of {self.label}/{blob}"):
            # The generated layer: the SDK's get_block_list decodes the IDs to text,
            # and IDs of raw bytes (AzCopy's) do not survive that.
            listed = client._client.block_blob.get_block_list(
                list_type="committed", snapshot=snapshot or None)
        return [(block.name, block.size) for block in listed.committed_blocks or []]

    def commit_block_names(self, blob: str, names: list[str], *, base_etag: str,
                           content_type: str | None, md5: str | None,
                           metadata: dict[str, str], retries: int | None = None) -> str:
        """commit_blocks, the blocks named as block_list names them (each the newest
        block of that name: one staged, else one committed), so that committed blocks
        of any ID can be kept as they are. The new ETag."""
        from azure.storage.blob._generated.models import (  # here: remote.py is being split
            BlobHTTPHeaders,
            BlockLookupList,
            ModifiedAccessConditions,
        )

        condition = (ModifiedAccessConditions(if_match=f'"{base_etag}"') if base_etag
                     else ModifiedAccessConditions(if_none_match="*"))
        settings = BlobHTTPHeaders(blob_content_type=content_type,
                                   blob_content_md5=bytearray.fromhex(md5) if md5 else None)
        client = self._client.get_blob_client(blob)
        with self._call(f"commit of {self.label}/{blob}"):
            try:
                result = client._client.block_blob.commit_block_list(
                    blocks=BlockLookupList(latest=names), blob_http_headers=settings,
                    headers={f"x-ms-meta-{key}": value for key, value in metadata.items()},
                    modified_access_conditions=condition,
                    cls=lambda _response, _body, answer: answer, **_retries(retries))
            except HttpResponseError as exc:
                if exc.status_code == PRECONDITION_FAILED:  # the generated layer's 412
                    raise RemoteConflict(f"commit of {self.label}/{blob}: changed in the"
                                         " container") from None
                raise
        return _etag(result.get("ETag")) or ""



def file_md5(path: Path) -> str:
    """The file's MD5, in hex as md5sum prints it. Blocks: run it in a worker thread."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key_from_connection_string(connection_string: str | None) -> str | None:
    if not connection_string:
        return None
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "accountkey":
            return value.strip()
    if "usedevelopmentstorage=true" in connection_string.lower():
        return AZURITE_KEY
    return None


#: The permission letters a container SAS may carry, in the order Azure wants them.
CONTAINER_SAS_LETTERS = "racwdxyltfmei"
#: The letters a directory SAS (sr=d) may carry.
DIRECTORY_SAS_LETTERS = "racwdxyltmei"


def mint_sas(account: Account, container: str, *, permissions: str, expiry: dt.datetime,
             prefix: str = "") -> str:
    """A SAS token (without '?') for `container`, signed with the account's key.

    Raises RemoteAuthError when the account has no key, ValueError for unknown letters.

    With a `prefix`, a directory SAS (sr=d) that reaches only that folder: Azure honours
    it on accounts with a hierarchical namespace (ADLS Gen2) only. A container SAS
    reaches the whole container.
    """
    key = account.account_key or _key_from_connection_string(account.connection_string)
    if not key:
        raise RemoteAuthError(
            f"account {account.name}: a SAS is signed with the account key, and this account"
            " has none (give account_key or a connection string with AccountKey)")
    allowed = DIRECTORY_SAS_LETTERS if prefix else CONTAINER_SAS_LETTERS
    unknown = sorted(set(permissions) - set(allowed))
    if not permissions or unknown:
        raise ValueError(
            f"permissions {permissions!r}: use letters of {allowed}"
            f" (r read, l list, w write, c create, a add, d delete)")
    ordered = "".join(letter for letter in allowed if letter in permissions)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # clocks drift
    protocol = "https" if account.endpoint.startswith("https:") else None
    if prefix:
        return generate_blob_sas(
            account.account_name, container, prefix.strip("/"), account_key=key,
            permission=BlobSasPermissions.from_string(ordered), start=start, expiry=expiry,
            protocol=protocol, is_directory=True)
    return generate_container_sas(
        account.account_name, container, account_key=key,
        permission=ContainerSasPermissions.from_string(ordered), start=start, expiry=expiry,
        protocol=protocol)
