"""What every part of `Remote` shares: the SDK's clients for the container, its label,
and the wrapper of each call that notes whether the account answered.

`Remote` (container.py) sets these up; the downloads (ranges.py), the block staging
(staging.py) and the SAS and AzCopy access (sas.py) are its parts, each a subclass of
`ContainerBase` so that each sees them.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import BlobServiceClient, ContainerClient

from ..config import Account
from ..errors import RemoteError, RemoteUnreachable
from ..metrics import Metrics
from .lean import LeanSender
from .transport import backoff, translate_errors

# After a call found the account unreachable, what is already known (cached files, old
# listings) is served for this many seconds without asking it again.
OFFLINE_GRACE = 15.0


class ContainerBase:
    """One container of an account, as the SDK reaches it."""

    account: Account
    container: str
    label: str
    #: when a call last found the account not answering; None once one got through
    unreachable_at: float | None
    _service: BlobServiceClient
    _client: ContainerClient
    _timeout: float
    _retries: int
    _metrics: Metrics | None

    @functools.cached_property
    def _lean(self) -> LeanSender | None:
        """Bare requests by urllib3 when they succeed (lean.py); None: all by the
        pipeline (a token credential, a proxy)."""
        return LeanSender.for_client(self._client.url, self._client.credential,
                                     timeout=self._timeout, metrics=self._metrics)

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

    def blob_url(self, blob: str = "") -> str:
        """URL of a blob (or, with blob='', of the container), without credentials."""
        base = f"{self.account.endpoint}/{self.container}"
        return f"{base}/{quote(blob, safe='/')}" if blob else base

    def _blob_request_url(self, blob: str) -> str:
        base, _, query = self._client.url.partition("?")
        return f"{base}/{quote(blob, safe='~/')}" + (f"?{query}" if query else "")

    def _send(self, request: HttpRequest, *, stream: bool = False,
              **options: Any) -> HttpResponse:
        """A bare request through the SDK's pipeline (auth, retries, timeouts, metrics),
        at the SDK's service version (the pipeline adds none: a request without one
        is served as the 2009 version). `options` go to the pipeline (retry_total).

        The SDK has no public way to send one: its generated client's `_send_request`
        is the only door. Listings, small GETs and small puts go through it because the
        SDK's own objects cost more CPU than the requests (see list_pages, _get_whole
        and Remote._put_whole)."""
        request.headers.setdefault("x-ms-version", self._client.api_version)
        retries = options.get("retry_total", self._retries)
        if self._lean is not None and options.keys() <= {"retry_total"} and retries > 0:
            answer = self._lean.send(request, stream=stream)
            if answer is not None:
                return answer  # type: ignore[return-value]  # read as an HttpResponse
            # The lean try was the first: the pipeline makes the others, after the wait
            # its retry policy would have made.
            time.sleep(backoff(1))
            options = {"retry_total": retries - 1}
        return self._client._client._send_request(request, stream=stream, **options)

    def _send_get(self, url: str, headers: Mapping[str, str]) -> HttpResponse:
        """A bare GET through the pipeline, its body not read yet; an error raised."""
        response = self._send(HttpRequest("GET", url, headers=dict(headers)), stream=True)
        if response.status_code >= 400:
            response.read()  # the error's text and code are in the body
            response.close()
        response.raise_for_status()
        return response
