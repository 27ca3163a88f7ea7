"""Bare requests over sockets of their own (wire.py), as the first try of each.

A small GET through azure-core's pipeline and `requests` cost 2.3-2.9 ms of the daemon's
CPU here, by urllib3 alone 0.8-1.0 ms (4 KiB from Azurite, 1,000 in a row), of which 0.4
ms was urllib3's and http.client's own; wire.py does that part in 0.07 ms. A lean
request is signed as the SDK signs it (Shared Key) or carries the SAS already in its
URL. Its answer is handed back if it is final: a success, or an error the pipeline would
not retry (403, 404, 409, 412, ...), which the caller raises as it would the pipeline's.
An answer the pipeline would retry (408, 429, 5xx) or none at all makes the caller send
the request through the pipeline, with one retry fewer: the lean try was the first. An
account reached by a token, or through a proxy, always goes by the pipeline.

Azure sorts the signed x-ms- headers by a collation of its own (a hyphen or an
underscore weighs less than a letter: `x-ms-meta-a_b` before `x-ms-meta-a1`), not as
Python sorts strings; the SDK's Shared Key policy has that sort, and a lean request
is signed by the same one, so user metadata (a small upload's mode and mtime) goes
lean too.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections.abc import Iterator, Mapping
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import requests.utils
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.storage.blob._shared.authentication import _storage_header_sort

from .transport import POOL_SIZE, RESPONSE_BLOCK, ca_bundle
from .wire import Answer, Pool, WireError

if TYPE_CHECKING:
    from ..metrics import Metrics

#: The headers Shared Key signs by position, in their order (after the verb).
_SIGNED = ("content-encoding", "content-language", "content-length", "content-md5",
           "content-type", "date", "if-modified-since", "if-match", "if-none-match",
           "if-unmodified-since", "range")


def string_to_sign(method: str, url: str, headers: Mapping[str, str], account: str) -> str:
    """What Shared Key signs of a request (Azure Storage's rules since 2015-02-21: a
    Content-Length of 0 is signed empty). ValueError: a header name Azure's collation
    has no weight for."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if lowered.get("content-length") == "0":
        lowered["content-length"] = ""
    positional = [lowered.get(name, "") for name in _SIGNED]
    canonical_headers = "".join(
        f"{name}:{value.strip()}\n" for name, value in _storage_header_sort(
            [(name, value) for name, value in lowered.items() if name.startswith("x-ms-")]))
    parts = urlsplit(url)
    # The query as the SDK reads it: split as written, each value unquoted ('+' kept).
    query = dict(part.partition("=")[::2] for part in parts.query.split("&") if part)
    resource = f"/{account}{parts.path}" + "".join(
        f"\n{name.lower()}:{unquote(query[name])}" for name in sorted(query))
    return "\n".join([method, *positional]) + "\n" + canonical_headers + resource


class LeanResponse:
    """A final answer (a success, or an error the pipeline would not retry), as the
    callers of a bare request read it: its body still to stream, or read (`body`)."""

    def __init__(self, response: Answer, body: bytes | None = None) -> None:
        self._response = response
        self._body = body
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    def iter_bytes(self) -> Iterator[bytes]:
        if self._body is not None:
            yield self._body
            return
        try:
            yield from self._response.stream(RESPONSE_BLOCK)
        except WireError as exc:  # cut short, or stalled
            raise ServiceResponseError(f"the answer stopped: {exc}", error=exc) from None

    @property
    def reason(self) -> str:
        return self._response.reason

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    def close(self) -> None:
        self._response.release()

    def raise_for_status(self) -> None:
        """The error the pipeline's answer would raise (its body read first)."""
        if self.status_code >= 400:
            raise HttpResponseError(response=self)  # type: ignore[arg-type]


class LeanSender:
    """Sends bare requests to one account's endpoint by a pool of its own."""

    def __init__(self, url: str, *, account: str, key: bytes | None, timeout: float,
                 metrics: Metrics | None = None) -> None:
        self._account = account
        self._key = key
        self._metrics = metrics
        self._pool = Pool(url, connect_timeout=min(timeout, 10.0), read_timeout=timeout,
                          ca_certs=ca_bundle(), maxsize=POOL_SIZE)

    @classmethod
    def for_client(cls, url: str, credential: object, *, timeout: float,
                   metrics: Metrics | None) -> LeanSender | None:
        """A sender for a container client's URL and credential: an account key (signed
        here), or none (a SAS in the URL); None for a token, or behind a proxy."""
        if requests.utils.get_environ_proxies(url):
            return None
        key = getattr(credential, "account_key", None)
        name = getattr(credential, "account_name", None)
        if isinstance(key, str) and isinstance(name, str):
            return cls(url, account=name, key=base64.b64decode(key), timeout=timeout,
                       metrics=metrics)
        if credential is None:
            return cls(url, account="", key=None, timeout=timeout, metrics=metrics)
        return None

    def send(self, request: HttpRequest, *, stream: bool) -> LeanResponse | None:
        """The answer if it is final; None if the pipeline must send the request (an
        answer it would retry, none, or a request it alone may sign)."""
        headers = dict(request.headers)
        body = request.content if isinstance(request.content, bytes) else None
        if request.content is not None and body is None:
            return None  # a stream to send: the pipeline's
        headers["x-ms-date"] = _http_date(int(time.time()))
        if body is not None:
            headers["Content-Length"] = str(len(body))
        if self._key is not None:
            try:
                text = string_to_sign(request.method, request.url, headers, self._account)
            except (ValueError, IndexError):  # a name outside the collation's table
                return None
            signature = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
            headers["Authorization"] = (f"SharedKey {self._account}:"
                                        f"{base64.b64encode(signature).decode()}")
        # Quoted as `requests` quotes it for the pipeline (a listing's prefix is not).
        parts = urlsplit(requests.utils.requote_uri(request.url))
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        started = time.perf_counter()
        try:
            response = self._pool.request(request.method, target, headers, body)
        except WireError:
            self._count(request, headers, None, started)
            return None  # no answer: the pipeline tries again, and counts its tries
        self._count(request, headers, response, started)
        if stream and response.status < 300:
            return LeanResponse(response)
        try:
            body = response.read()
        except WireError:
            return None
        if not (200 <= response.status < 300 or _final_error(response.status)):
            return None
        return LeanResponse(response, body)

    def _count(self, request: HttpRequest, headers: Mapping[str, str],
               response: Answer | None, started: float) -> None:
        """One try, counted as the pipeline's transport counts its own."""
        if self._metrics is None:
            return
        status = None if response is None else response.status
        received = (response.headers.get("Content-Length") if response is not None
                    and request.method == "GET" else 0)
        sent = headers.get("Content-Length") if request.method == "PUT" else 0
        self._metrics.remote_request(request.method, request.url, headers, status,
                                     time.perf_counter() - started, sent=int(sent or 0),
                                     received=int(received or 0))


@functools.lru_cache(maxsize=1)
def _http_date(second: int) -> str:
    """A second as an HTTP date, made once (email.utils.formatdate costs 5 us)."""
    return formatdate(second, usegmt=True)


def _final_error(status: int) -> bool:
    """An error answer the pipeline hands back as it is: a 4xx but a timeout (408) or
    throttling (429), which it retries, as it does every 5xx."""
    return 400 <= status < 500 and status not in (408, 429)
