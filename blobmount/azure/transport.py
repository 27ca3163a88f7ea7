"""The SDK's transport and retries for one account, and the translation of every SDK
exception into a `RemoteError` subclass with a one-line, redacted message.

`_ThrottleAwareTransport` sees every try of every request: the one place they are
counted (`metrics`)."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import requests
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ExponentialRetry

from ..config import Account
from ..errors import (
    RemoteAuthError,
    RemoteConflict,
    RemoteError,
    RemoteNotFound,
    RemoteUnreachable,
)
from ..log import redact
from ..metrics import Metrics

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
# Statuses that say "try again later"; the SDK itself retries 408 and 5xx but not 429.
THROTTLED = 429
# Bytes read from a response at a time: the SDK's own choice when it makes the transport.
RESPONSE_BLOCK = 256 * 1024
# Pooled connections per account: parallel transfers times the SDK's requests each.
POOL_SIZE = 64


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...) of a failed call."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.5)


class _Backoff(ExponentialRetry):
    """The storage SDK's retry policy (it retries connection errors, timeouts, 408 and
    5xx but never 403, 404 or 409) with our waits: its own are 15 s, 18 s, 24 s."""

    def get_backoff_time(self, settings: dict) -> float:
        return backoff(settings["count"])


def ca_bundle() -> str | None:
    """The CA bundle the environment names for HTTPS, as `requests` reads it."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")


class _ThrottleAwareTransport(RequestsTransport):
    """Turns a 429 into an error the retry policy retries (it retries any AzureError
    raised below it), since the storage SDK would hand a 429 straight back.

    Below the retry policy, it sees every try of every request the SDK makes: the one
    place they are counted (`metrics`)."""

    def __init__(self, endpoint: str, metrics: Metrics | None = None, **options: Any) -> None:
        self._endpoint = endpoint
        self._metrics = metrics
        super().__init__(**options)
        # Each request names what it verifies against (True: certifi's bundle), which
        # wins over the session's `verify`: the environment's bundle must be said here.
        bundle = ca_bundle()
        if bundle and "connection_verify" not in options:
            self.connection_config.verify = bundle

    def _init_session(self, session: Any) -> None:
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
        bundle = ca_bundle()
        if bundle:
            session.verify = bundle
        session.trust_env = False

    def send(self, request: Any, **kwargs: Any) -> Any:
        if self._metrics is None:
            response = super().send(request, **kwargs)
        else:
            response = self._counted_send(self._metrics, request, **kwargs)
        if response.status_code == THROTTLED:
            error = HttpResponseError(message="the account is throttling requests",
                                      response=response)
            response.close()
            raise error
        return response


    def _counted_send(self, metrics: Metrics, request: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            response = super().send(request, **kwargs)
        except BaseException:
            metrics.remote_request(request.method, request.url, request.headers, None,
                                   time.perf_counter() - started)
            raise
        # Bytes as the headers give them: a body still to be streamed is counted whole.
        received = response.headers.get("Content-Length") if request.method == "GET" else 0
        sent = request.headers.get("Content-Length") if request.method == "PUT" else 0
        metrics.remote_request(request.method, request.url, request.headers,
                               response.status_code, time.perf_counter() - started,
                               sent=int(sent or 0), received=int(received or 0))
        return response


def service_client(account: Account, *, timeout: float, retries: int,
                    metrics: Metrics | None = None) -> BlobServiceClient:
    # The timeouts bound each try: connecting, and each wait for the next bytes of an
    # answer (an idle timeout, so a big download is not cut short).
    options: dict[str, Any] = {
        "transport": _ThrottleAwareTransport(account.endpoint, metrics,
                                             connection_timeout=min(timeout, 10.0),
                                             read_timeout=timeout,
                                             connection_data_block_size=RESPONSE_BLOCK),
        "retry_policy": _Backoff(retry_total=retries),
    }
    if account.connection_string:
        return BlobServiceClient.from_connection_string(account.connection_string, **options)
    credential: Any
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
    headers = getattr(exc.response, "headers", None) or {}
    code = (getattr(exc, "error_code", None) or headers.get("x-ms-error-code") or exc.reason
            or exc.status_code)
    # Some codes come as StorageErrorCode members, whose str() is the enum's repr.
    return redact(str(getattr(code, "value", code)))


def retry_options(retries: int | None) -> dict[str, Any]:
    """Keyword arguments of one SDK call that override the client's retry count."""
    return {} if retries is None else {"retry_total": retries}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)

