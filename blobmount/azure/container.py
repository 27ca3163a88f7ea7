"""`Remote`: one container of one storage account, through the azure-storage-blob SDK.

Every method here blocks (the SDK is synchronous): the daemon calls them through
`AsyncContainer` (aio.py), in worker threads under its one limiter. Every SDK
exception leaves this package as a `RemoteError` subclass with a one-line, redacted
message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, urlencode

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.storage.blob import ContentSettings

from ..access import azcopy_login
from ..config import Account
from ..decide import BARE_PUT_MAX
from ..errors import RemoteConflict, RemoteError, RemoteUnsupported
from ..log import register_secret
from ..metrics import Metrics
from .listing import (
    FOLDER_MARKER_KEY,
    BlobItem,
    BlobProperties,
    answer_mtime_ns,
    bare_etag,
    blob_mtime_ns,
    is_folder_marker,
    parse_listing,
)
from .protocol import RemoteContainer
from .ranges import Downloads
from .sas import SasAccess
from .staging import Staging
from .transport import CHECK_RETRIES, RETRIES, retry_options, service_client

#: Azure's answers when an account does not do blob index tags.
_UNSUPPORTED_CODES = ("FeatureNotSupported", "NotImplemented", "FeatureNotYetSupported")
#: Tries of a read-modify-write of metadata that another writer keeps changing.
METADATA_TRIES = 5


class Remote(Downloads, Staging, SasAccess, RemoteContainer):
    """One container of an account: list, stat, download, upload, and SAS for AzCopy."""

    def __init__(self, account: Account, container: str, *, timeout: float = 10.0,
                 retries: int = RETRIES, metrics: Metrics | None = None) -> None:
        self.account = account
        self.container = container
        self._service = service_client(account, timeout=timeout, retries=retries,
                                       metrics=metrics)
        self._client = self._service.get_container_client(container)
        self._timeout, self._retries, self._metrics = timeout, retries, metrics
        self.label = f"{account.account_name}/{container}"
        self.unreachable_at = None
        self.azcopy_login = (azcopy_login(os.environ) if not self._key() and not
                             account.sas_token else None)
        register_secret((self.azcopy_login or {}).get("AZCOPY_SPA_CLIENT_SECRET"))
        self._delegation_key = None
        self._delegation_key_lock = threading.Lock()
        self._hns = None

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
                items, marker = self._list_page(prefix, page_size, marker, delimiter="/")
                yield items
                if not marker:
                    return

    def list_tree(self, prefix: str, most: int) -> tuple[list[BlobItem], bool]:
        """Every blob under `prefix`, at any depth, by one request of at most `most`
        items (no delimiter), in name order; and whether that is all of them."""
        with self._call(f"listing {self.label}/{prefix}"):
            items, marker = self._list_page(prefix, most, "", delimiter=None)
        return items, not marker

    def _list_page(self, prefix: str, page_size: int, marker: str, *,
                   delimiter: str | None) -> tuple[list[BlobItem], str]:
        """One List Blobs request: its items and the next page's marker ("": none)."""
        params = {"restype": "container", "comp": "list", "include": "metadata",
                  "maxresults": str(page_size)}
        if delimiter:
            params["delimiter"] = delimiter
        if prefix:
            params["prefix"] = prefix
        if marker:
            params["marker"] = marker
        # Quoted here: azure-core would leave a prefix raw and `requests` would send
        # its '+' as is, which the service reads as a space (refused: the signature
        # names a '+').
        base, _, sas = self._client.url.partition("?")
        query = urlencode(params, quote_via=quote) + (f"&{sas}" if sas else "")
        response = self._send(HttpRequest("GET", f"{base}?{query}"))
        response.raise_for_status()
        return parse_listing(response.read())

    def properties(self, blob: str, *, retries: int | None = None) -> BlobItem:
        """Size, time and ETag by one HEAD (`retries` overrides the client's count)."""
        with self._call(f"blob {self.label}/{blob}"):
            props = self._client.get_blob_client(blob).get_blob_properties(
                **retry_options(retries))
        return BlobItem(blob, is_folder_marker(props), props.size,
                        blob_mtime_ns(props.last_modified, props.metadata), bare_etag(props.etag))

    def head(self, blob: str, *, retries: int | None = None) -> BlobProperties:
        """The blob's full property set and metadata, by one HEAD (`retries` overrides
        the client's count)."""
        with self._call(f"blob {self.label}/{blob}"):
            props = self._client.get_blob_client(blob).get_blob_properties(
                **retry_options(retries))
        settings = props.content_settings
        md5 = settings.content_md5 if settings else None
        return BlobProperties(
            name=blob, size=props.size, etag=bare_etag(props.etag) or "",
            mtime_ns=blob_mtime_ns(props.last_modified), last_modified=props.last_modified,
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
                return bare_etag(props.etag) or "", bare_etag(result.get("etag")) or ""
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
                raw = getattr(exc, "error_code", None)
                code = str(getattr(raw, "value", raw) or "")
                if exc.status_code == 501 or code.startswith(_UNSUPPORTED_CODES):
                    raise RemoteUnsupported(
                        f"tags of {self.label}/{blob}: the account has no blob index"
                        f" tags ({code or exc.status_code})") from None
                raise

    def upload(self, blob: str, source: Path, *, base_etag: str, md5: str,
               metadata: dict[str, str] | None = None, concurrency: int = 4,
               retries: int | None = None) -> BlobItem:
        """Put the file's bytes as `blob`, only if the blob is still the version
        `base_etag` ('' = only if there is no blob); RemoteConflict otherwise. `md5`
        (hex, see file_md5) becomes the blob's Content-MD5.

        `retries` overrides the client's retry count for this call (the upload journal
        retries on its own schedule, so it asks for few here).
        """
        if os.path.getsize(source) <= BARE_PUT_MAX:
            return self._put_whole(blob, source.read_bytes(), base_etag=base_etag, md5=md5,
                                   metadata=metadata, retries=retries)
        options: dict = {"overwrite": False}
        if base_etag:
            options = {"overwrite": True, "etag": base_etag,
                       "match_condition": MatchConditions.IfNotModified}
        options.update(retry_options(retries))
        with self._call(f"upload of {self.label}/{blob}"), open(source, "rb") as data:
            result = self._client.get_blob_client(blob).upload_blob(
                data, length=os.fstat(data.fileno()).st_size, metadata=metadata,
                content_settings=ContentSettings(content_md5=bytearray.fromhex(md5)),
                max_concurrency=concurrency, **options)
        return BlobItem(blob, False, source.stat().st_size,
                        blob_mtime_ns(result.get("last_modified"), metadata),
                        bare_etag(result.get("etag")))

    def _put_whole(self, blob: str, data: bytes, *, base_etag: str, md5: str,
                   metadata: Mapping[str, str] | None, retries: int | None) -> BlobItem:
        """`upload` of a small file: one Put Blob, bare through the pipeline (the SDK's
        upload_blob costs more CPU than the request: see BARE_PUT_MAX)."""
        digest = base64.b64encode(bytes.fromhex(md5)).decode()
        headers = {"x-ms-blob-type": "BlockBlob", "Content-MD5": digest,
                   "x-ms-blob-content-md5": digest,
                   **({"If-Match": f'"{base_etag}"'} if base_etag else {"If-None-Match": "*"}),
                   **{f"x-ms-meta-{key}": value for key, value in (metadata or {}).items()}}
        with self._call(f"upload of {self.label}/{blob}"):
            response = self._send(HttpRequest("PUT", self._blob_request_url(blob),
                                              headers=headers, content=data),
                                  **retry_options(retries))
            if response.status_code == 409:  # BlobAlreadyExists
                raise ResourceExistsError(response=response)
            if response.status_code == 412:  # ConditionNotMet
                raise ResourceModifiedError(response=response)
            response.raise_for_status()
        return BlobItem(blob, False, len(data), answer_mtime_ns(
            response.headers.get("Last-Modified"), metadata),
            bare_etag(response.headers.get("ETag")))

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
        return BlobItem(name + "/", True, 0, blob_mtime_ns(result.get("last_modified")))

    def put_small(self, blob: str, data: bytes, metadata: Mapping[str, str]) -> BlobItem:
        """Put a small blob (a symlink) that must not exist yet: RemoteConflict if it does."""
        with self._call(f"upload of {self.label}/{blob}"):
            result = self._client.get_blob_client(blob).upload_blob(
                data, metadata=dict(metadata), overwrite=False)
        return BlobItem(blob, False, len(data),
                        blob_mtime_ns(result.get("last_modified"), metadata),
                        bare_etag(result.get("etag")))

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
                if is_folder_marker(blob):
                    yield BlobItem(blob.name + "/", True,
                                   mtime_ns=blob_mtime_ns(blob.last_modified))
                else:
                    yield BlobItem(blob.name, False, blob.size, blob_mtime_ns(blob.last_modified),
                                   bare_etag(blob.etag))

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
        return bare_etag(etag)


def file_md5(path: Path) -> str:
    """The file's MD5, in hex as md5sum prints it. Blocks: run it in a worker thread."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
