"""The HTTP session under every SDK call: the environment's proxy and CA bundle
settings, read once per account instead of for every request."""

from __future__ import annotations

import pytest
import requests

from blobmount.azure.transport import _ThrottleAwareTransport

ENDPOINT = "https://acct.blob.core.windows.net"


def session_for(endpoint: str) -> requests.Session:
    session = requests.Session()
    _ThrottleAwareTransport(endpoint)._init_session(session)
    return session


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY",
                 "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_the_proxy_of_the_environment_is_used(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = session_for(ENDPOINT)
    assert session.proxies["https"] == "http://proxy.example:3128"
    assert not session.trust_env  # not read again for each request


def test_no_proxy_is_honoured_for_the_account(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", ".core.windows.net")
    assert "https" not in session_for(ENDPOINT).proxies


def test_a_ca_bundle_of_the_environment_is_used(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert session_for(ENDPOINT).verify == str(bundle)
    # What each request is sent with: it wins over the session's.
    assert _ThrottleAwareTransport(ENDPOINT).connection_config.verify == str(bundle)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert session_for(ENDPOINT).verify is True
    assert _ThrottleAwareTransport(ENDPOINT).connection_config.verify is True


def test_connections_are_pooled_for_parallel_transfers():
    adapter = session_for(ENDPOINT).get_adapter(ENDPOINT)
    assert adapter._pool_maxsize >= 32
