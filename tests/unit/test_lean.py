"""Bare requests by urllib3 (azure/lean.py): signed as the SDK signs them, and only a
success handed back; everything else is left to the pipeline."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest
from azure.storage.blob._shared.authentication import (
    SharedKeyCredentialPolicy,
    _storage_header_sort,
)

from blobmount.azure.lean import LeanSender, string_to_sign
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY
from blobmount.metrics import Metrics

ACCOUNT_URL = "https://acct.blob.core.windows.net"
DATE = "Thu, 03 Dec 2026 16:00:00 GMT"


def sdk_signature(request: HttpRequest) -> str:
    """The Authorization header the SDK's own Shared Key policy gives the request."""
    policy = SharedKeyCredentialPolicy(AZURITE_ACCOUNT, AZURITE_KEY)
    policy.on_request(PipelineRequest(request, PipelineContext(None)))
    return request.headers["Authorization"]


def our_signature(request: HttpRequest) -> str:
    import base64
    import hashlib
    import hmac

    text = string_to_sign(request.method, request.url, request.headers, AZURITE_ACCOUNT)
    digest = hmac.new(base64.b64decode(AZURITE_KEY), text.encode(), hashlib.sha256).digest()
    return f"SharedKey {AZURITE_ACCOUNT}:{base64.b64encode(digest).decode()}"


@pytest.mark.parametrize("request_of", [
    lambda: HttpRequest("GET", f"{ACCOUNT_URL}/c/dir/a%20name%2B%C3%A9.txt", headers={
        "x-ms-version": "2025-01-05", "x-ms-date": DATE}),
    lambda: HttpRequest("GET", f"{ACCOUNT_URL}/c/huge.bin", headers={
        "x-ms-version": "2025-01-05", "x-ms-date": DATE, "x-ms-range": "bytes=0-131071",
        "If-Match": '"0x8DC"', "x-ms-range-get-content-md5": "true"}),
    lambda: HttpRequest("GET", f"{ACCOUNT_URL}/c", params={
        "restype": "container", "comp": "list", "delimiter": "/", "include": "metadata",
        "maxresults": "5000", "prefix": "a dir/é+", "marker": "2!80!MDAwMDE0"}, headers={
        "x-ms-version": "2025-01-05", "x-ms-date": DATE}),
    lambda: HttpRequest("PUT", f"{ACCOUNT_URL}/c/small", content=b"12345", headers={
        "x-ms-version": "2025-01-05", "x-ms-date": DATE, "x-ms-blob-type": "BlockBlob",
        "Content-MD5": "gnzLDuqKcGxMNKFokfhOew==", "x-ms-blob-content-md5":
        "gnzLDuqKcGxMNKFokfhOew==", "If-None-Match": "*", "Content-Length": "5"}),
    lambda: put_with_metadata(),
], ids=["get", "range", "list", "put", "metadata"])
def test_requests_are_signed_as_the_sdk_signs_them(request_of) -> None:
    assert our_signature(request_of()) == sdk_signature(request_of())


def put_with_metadata() -> HttpRequest:
    """A small upload's request: user metadata whose names Azure's collation orders
    otherwise than Python's sort (a '_' or '-' weighs less than a letter or digit)."""
    return HttpRequest("PUT", f"{ACCOUNT_URL}/c/small", content=b"12345", headers={
        "x-ms-version": "2025-01-05", "x-ms-date": DATE, "x-ms-blob-type": "BlockBlob",
        "x-ms-meta-mtime": "1764777600.5", "x-ms-meta-mode": "0o100644",
        "x-ms-meta-a_b": "1", "x-ms-meta-a1": "2", "x-ms-meta-ab": "3",
        "If-None-Match": "*", "Content-Length": "5"})


def test_metadata_names_sort_by_azures_collation_not_pythons() -> None:
    """The case above would fail signed by a plain sort of the names."""
    names = [name.lower() for name in put_with_metadata().headers
             if name.lower().startswith("x-ms-")]
    assert [name for name, _ in _storage_header_sort([(n, "") for n in names])] != sorted(names)


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers each GET or PUT with the status its path names (/200, /403, ...)."""

    def do_GET(self) -> None:
        status = int(self.path.strip("/").partition("?")[0] or 200)
        body = b"body" if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def sender(url: str, metrics: Metrics | None = None) -> LeanSender:
    return LeanSender(url, account=AZURITE_ACCOUNT, key=None, timeout=5.0, metrics=metrics)


def tries(metrics: Metrics) -> dict[str, float]:
    return {sample.labels["status"]: sample.value
            for family in metrics.remote_requests.collect() for sample in family.samples
            if sample.name.endswith("_total")}


def test_a_final_answer_is_handed_back_and_one_to_retry_left_to_the_pipeline(
        server: str) -> None:
    """A success or an error the pipeline would not retry is the answer (an error
    raised as the pipeline's is); a timeout, throttling or a 5xx, the pipeline's."""
    metrics = Metrics()
    lean = sender(server, metrics)
    answer = lean.send(HttpRequest("GET", f"{server}/200"), stream=True)
    assert answer is not None and (answer.status_code, answer.read()) == (200, b"body")
    for status in (403, 404, 409, 412):
        refused = lean.send(HttpRequest("GET", f"{server}/{status}"), stream=True)
        assert refused is not None and refused.status_code == status
        with pytest.raises(HttpResponseError) as raised:
            refused.raise_for_status()
        assert raised.value.status_code == status
    for status in (408, 429, 500, 503):
        assert lean.send(HttpRequest("GET", f"{server}/{status}"), stream=False) is None
    assert tries(metrics) == {str(status): 1 for status in (
        200, 403, 404, 409, 412, 408, 429, 500, 503)}


def test_no_answer_is_left_to_the_pipeline_and_counted(server: str) -> None:
    metrics = Metrics()
    lean = sender("http://127.0.0.1:9", metrics)  # nothing listens on the discard port
    assert lean.send(HttpRequest("GET", "http://127.0.0.1:9/200"), stream=True) is None
    assert tries(metrics) == {"error": 1}


def test_a_put_with_user_metadata_goes_lean(server: str) -> None:
    metrics = Metrics()
    request = HttpRequest("PUT", f"{server}/201", content=b"x",
                          headers={"x-ms-meta-a_b": "1", "x-ms-meta-a1": "2"})
    answer = sender(server, metrics).send(request, stream=False)
    assert answer is not None and answer.status_code == 201
    assert tries(metrics) == {"201": 1}


def test_a_token_credential_or_a_proxy_means_the_pipeline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Token:
        def get_token(self, *scopes: str) -> None:
            raise AssertionError("not asked for")

    assert LeanSender.for_client(f"{ACCOUNT_URL}/c", Token(), timeout=5.0,
                                 metrics=None) is None
    assert LeanSender.for_client(f"{ACCOUNT_URL}/c?sv=x&sig=y", None, timeout=5.0,
                                 metrics=None) is not None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert LeanSender.for_client(f"{ACCOUNT_URL}/c?sv=x&sig=y", None, timeout=5.0,
                                 metrics=None) is None
