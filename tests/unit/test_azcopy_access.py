"""What AzCopy is handed: a URL without a SAS and a login in its environment for an
account known by an identity; for a key, a SAS scoped to the job that expires with it.
And the SAS a server-side copy (a rename) gives the service for its source."""

from __future__ import annotations

import datetime as dt
import sys
import types
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from blobmount.access import (
    AZCOPY_SAS_BASE,
    AZCOPY_SAS_MIN_RATE,
    COPY_SAS_LIFETIME,
    azcopy_login,
)
from blobmount.azcopy import AzCopy
from blobmount.azure import AsyncContainer, BlobItem, Remote
from blobmount.azure import container as container_module
from blobmount.azure import sas as sas_module
from blobmount.cache import Cache
from blobmount.config import AZURITE_KEY, Account, MountEntry
from blobmount.log import redact
from blobmount.store import Store
from blobmount.threads import Threads
from blobmount.transfers import Downloads, Wanted

from .test_azcopy import FAKE_AZCOPY, end_of_job

ENDPOINT = "https://acct.blob.core.windows.net"
IDENTITY_VARIABLES = ("AZCOPY_AUTO_LOGIN_TYPE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
                      "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                      "AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT", "MSI_ENDPOINT")


@pytest.fixture(autouse=True)
def no_identity(monkeypatch):
    for name in IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class _NoCredential:
    """Stands in for DefaultAzureCredential: these tests never ask for a token."""

    def get_token(self, *scopes, **kwargs):
        raise AssertionError("no token is asked for")


@pytest.fixture
def identity_remote(monkeypatch):
    fake_identity = types.ModuleType("azure.identity")
    fake_identity.DefaultAzureCredential = _NoCredential
    monkeypatch.setitem(sys.modules, "azure.identity", fake_identity)

    def make() -> Remote:
        return Remote(Account(name="id", account_name="acct", endpoint=ENDPOINT,
                              use_identity=True), "data")
    return make


def key_remote() -> Remote:
    return Remote(Account(name="k", account_name="acct", endpoint=ENDPOINT,
                          account_key=AZURITE_KEY), "data")


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def lifetime(token: dict[str, str]) -> dt.timedelta:
    return (dt.datetime.fromisoformat(token["se"].replace("Z", "+00:00"))
            - dt.datetime.now(dt.UTC))


# ------------------------------------------------------------ which login AzCopy gets

@pytest.mark.parametrize(("environ", "login"), [
    ({}, None),  # nothing says which identity: the SDK does the transfers
    ({"AZCOPY_AUTO_LOGIN_TYPE": "azcli"}, {"AZCOPY_AUTO_LOGIN_TYPE": "AZCLI"}),
    ({"AZCOPY_AUTO_LOGIN_TYPE": "MSI", "AZURE_CLIENT_SECRET": "s"},
     {"AZCOPY_AUTO_LOGIN_TYPE": "MSI"}),  # the user's choice wins
    ({"AZCOPY_AUTO_LOGIN_TYPE": "DEVICE"}, None),  # nobody at a daemon to sign in
    ({"AZURE_CLIENT_ID": "app", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s3cret"},
     {"AZCOPY_AUTO_LOGIN_TYPE": "SPN", "AZCOPY_SPA_APPLICATION_ID": "app",
      "AZCOPY_TENANT_ID": "t", "AZCOPY_SPA_CLIENT_SECRET": "s3cret"}),
    ({"AZURE_CLIENT_ID": "app", "AZURE_TENANT_ID": "t",
      "AZURE_CLIENT_CERTIFICATE_PATH": "/c.pem"},
     {"AZCOPY_AUTO_LOGIN_TYPE": "SPN", "AZCOPY_SPA_APPLICATION_ID": "app",
      "AZCOPY_TENANT_ID": "t", "AZCOPY_SPA_CERT_PATH": "/c.pem"}),
    ({"AZURE_CLIENT_ID": "app", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/f"},
     {"AZCOPY_AUTO_LOGIN_TYPE": "WORKLOAD"}),
    ({"IDENTITY_ENDPOINT": "http://127.0.0.1:41/token"}, {"AZCOPY_AUTO_LOGIN_TYPE": "MSI"}),
    ({"MSI_ENDPOINT": "http://x", "AZURE_CLIENT_ID": "uami"},
     {"AZCOPY_AUTO_LOGIN_TYPE": "MSI", "AZCOPY_MSI_CLIENT_ID": "uami"}),
    ({"AZURE_CLIENT_ID": "app", "AZURE_CLIENT_SECRET": "s"}, None),  # no tenant: not an SPN
])
def test_the_login_follows_what_default_azure_credential_reads(environ, login):
    assert azcopy_login(environ) == login


def test_a_key_account_never_logs_in(monkeypatch):
    monkeypatch.setenv("AZCOPY_AUTO_LOGIN_TYPE", "MSI")
    remote = key_remote()
    assert remote.azcopy_login is None
    assert remote.azcopy_blob("a.bin", size=1).env == {}


# ------------------------------------------------- what the AzCopy process is handed

@pytest.fixture
def recording_azcopy(tmp_path, monkeypatch):
    """The real AzCopy class driving a stand-in binary that records argv and env."""
    binary = tmp_path / "azcopy"
    binary.write_text(FAKE_AZCOPY)
    binary.chmod(0o700)
    output = tmp_path / "output.jsonl"
    output.write_text(end_of_job("Completed", 1, 0, 5) + "\n")
    for name, value in (("FAKE_OUTPUT", output), ("FAKE_RECORD", tmp_path / "record"),
                        ("FAKE_EXIT", 0), ("FAKE_LOG", ""), ("FAKE_SLEEP", "")):
        monkeypatch.setenv(name, str(value))

    def run(url: str, env) -> tuple[list[str], dict[str, str]]:
        azcopy = AzCopy(binary, tmp_path / "work", threads=Threads(2))
        trio.run(lambda: azcopy.copy(url, str(tmp_path / "dst"), from_to="BlobLocal",
                                     env=env))
        args = (tmp_path / "record.args").read_text().splitlines()
        lines = (tmp_path / "record.env").read_text().splitlines()
        return args, dict(line.split("=", 1) for line in lines if "=" in line)
    return run


def test_an_identity_job_has_no_sas_on_its_command_line(identity_remote, monkeypatch,
                                                        recording_azcopy):
    monkeypatch.setenv("AZURE_CLIENT_ID", "app")
    monkeypatch.setenv("AZURE_TENANT_ID", "tenant")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "the-client-secret")
    remote = identity_remote()
    for access in (remote.azcopy_blob("a/b.bin", size=1 << 30),
                   remote.azcopy_folder("a/", size=1 << 30)):
        args, env = recording_azcopy(access.url, access.env)
        assert not any("sig=" in arg or "?" in arg for arg in args), args
        assert not any("the-client-secret" in arg for arg in args)
        assert args[1] in (f"{ENDPOINT}/data/a/b.bin", f"{ENDPOINT}/data/a")
        assert env["AZCOPY_AUTO_LOGIN_TYPE"] == "SPN"
        assert env["AZCOPY_SPA_APPLICATION_ID"] == "app"
        assert env["AZCOPY_TENANT_ID"] == "tenant"
        assert env["AZCOPY_SPA_CLIENT_SECRET"] == "the-client-secret"
    # Should AzCopy ever quote it, no log line or error would show it.
    assert redact("AzCopy said: the-client-secret") == "AzCopy said: REDACTED"


def test_azcopy_may_hand_its_token_only_to_the_endpoint_of_the_config(identity_remote,
                                                                     monkeypatch):
    monkeypatch.setenv("AZCOPY_AUTO_LOGIN_TYPE", "MSI")
    assert identity_remote().azcopy_blob("a", size=1).args == ()  # Azure's own domain
    monkeypatch.setattr(container_module, "service_client", lambda *a, **k: _NoService())
    private = Remote(Account(name="id", account_name="acct", use_identity=True,
                             endpoint="https://10.1.2.3:8443/acct"), "data")
    assert private.azcopy_folder("", size=1).args == (
        "--trusted-microsoft-suffixes=10.1.2.3:8443",)
    assert key_remote().azcopy_blob("a", size=1).args == ()


def test_a_sas_job_does_not_log_in_even_if_the_daemon_was_told_to(monkeypatch,
                                                                  recording_azcopy):
    monkeypatch.setenv("AZCOPY_AUTO_LOGIN_TYPE", "AZCLI")
    access = key_remote().azcopy_blob("a.bin", size=10)
    args, env = recording_azcopy(access.url, access.env)
    assert "sig" in query(args[1])
    assert "AZCOPY_AUTO_LOGIN_TYPE" not in env


def test_an_identity_account_that_cannot_be_told_keeps_azcopy_out(identity_remote):
    remote = identity_remote()
    assert remote.azcopy_login is None and not remote.azcopy_usable


# ------------------------------------------------------------ the SAS of a key account

def test_a_download_sas_reads_one_blob_and_lasts_as_the_job():
    remote = key_remote()
    small = query(remote.azcopy_blob("a/b.bin", size=10).url)
    assert small["sr"] == "b" and small["sp"] == "r"
    assert AZCOPY_SAS_BASE - dt.timedelta(minutes=1) < lifetime(small) <= AZCOPY_SAS_BASE
    big = query(remote.azcopy_blob("a/b.bin", size=3600 * AZCOPY_SAS_MIN_RATE).url)
    assert lifetime(big) > AZCOPY_SAS_BASE + dt.timedelta(minutes=59)
    assert lifetime(big) <= AZCOPY_SAS_BASE + dt.timedelta(hours=1)


def test_an_upload_sas_writes_one_blob_and_cannot_read():
    token = query("?" + key_remote().sas_for_azcopy(blob="a.bin", write=True))
    assert token["sr"] == "b" and sorted(token["sp"]) == ["c", "w"]


def test_a_batch_sas_reads_without_listing(monkeypatch):
    remote = key_remote()
    monkeypatch.setattr(remote, "_hierarchical", lambda: False)
    flat = query(remote.azcopy_folder("a/b/", size=10).url)
    assert flat["sr"] == "c" and flat["sp"] == "r"  # no narrower SAS on a flat account
    assert lifetime(flat) <= AZCOPY_SAS_BASE
    monkeypatch.setattr(remote, "_hierarchical", lambda: True)
    access = remote.azcopy_folder("a/b/", size=10)
    folder = query(access.url)
    assert access.url.startswith(f"{ENDPOINT}/data/a/b?")
    assert folder["sr"] == "d" and folder["sp"] == "r" and folder["sdd"] == "2"
    # The whole container: a container SAS, whatever the namespace.
    assert query(remote.azcopy_folder("", size=10).url)["sr"] == "c"


# ------------------------------------------------ the wiring in transfers.Downloads

class _RecordingAzCopy:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, dict]] = []

    async def copy(self, source: str, destination: str, *, env=None, list_of_files=None,
                   **_ignored):
        self.jobs.append((source, dict(env or {})))
        if list_of_files is None:
            Path(destination).write_bytes(b"x" * 10)


class _HeadOnly(Remote):
    """A real Remote whose HEAD needs no account."""

    def properties(self, blob, *, retries=None):
        return BlobItem(name=blob, is_dir=False, size=10, etag="E1")

    def list_files(self, prefix):
        return iter([])


def test_downloads_hand_azcopy_the_access_of_the_remote(tmp_path, monkeypatch,
                                                        identity_remote):
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/token")
    monkeypatch.setattr(container_module, "service_client", lambda *a, **k: _NoService())
    remote = _HeadOnly(Account(name="id", account_name="acct", endpoint=ENDPOINT,
                               use_identity=True), "data")
    entry = MountEntry(local="data", account=remote.account, container="data", prefix="",
                       cache_dir=tmp_path / "cache")
    store = Store(tmp_path / "meta" / "blobmount.sqlite")
    azcopy = _RecordingAzCopy()
    downloads = Downloads(Cache(store), lambda _entry: azcopy, sdk_max=0)
    container = AsyncContainer(remote, Threads(2))

    async def main() -> None:
        await downloads.cached_copy(entry, container, "a/b.bin", size=10, etag="E1",
                                    shown_path="data/a/b.bin")
        await downloads.fetch_batch(entry, container, [
            Wanted(blob=f"p/f{i}", size=10, etag="E1", shown_path=f"data/p/f{i}")
            for i in range(40)])
    try:
        trio.run(main)
    finally:
        store.close()
    # The read, then the batch's job (whose files, not made by the stand-in, come alone).
    assert [url for url, _ in azcopy.jobs[:2]] == [f"{ENDPOINT}/data/a/b.bin",
                                                  f"{ENDPOINT}/data/p"]
    assert len(azcopy.jobs) == 42
    assert all("?" not in url for url, _ in azcopy.jobs)
    assert all(env == {"AZCOPY_AUTO_LOGIN_TYPE": "MSI"} for _, env in azcopy.jobs)


class _NoService:
    def get_container_client(self, container):
        return None

    def close(self) -> None:
        pass


# ------------------------------------------- a rename's source on an identity account

class _DelegatingService(_NoService):
    """Hands out user delegation keys, as the service does for a signed-in identity."""

    def __init__(self) -> None:
        self.asked: list[tuple[dt.datetime, dt.datetime]] = []

    def get_user_delegation_key(self, start, expiry):
        self.asked.append((start, expiry))
        from azure.storage.blob import UserDelegationKey

        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid", "tid"
        key.signed_start = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2025-01-05"
        key.value = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="
        return key


def test_a_copy_source_on_an_identity_account_gets_a_user_delegation_sas(monkeypatch):
    service = _DelegatingService()
    monkeypatch.setattr(container_module, "service_client", lambda *a, **k: service)
    remote = Remote(Account(name="id", account_name="acct", endpoint=ENDPOINT,
                            use_identity=True), "data")
    first = query("?" + remote._copy_source_sas("a/b.bin"))
    assert first["sr"] == "b" and first["sp"] == "r"
    assert first["skoid"] == "oid" and first["sktid"] == "tid"  # signed by the key
    assert lifetime(first) <= COPY_SAS_LIFETIME
    remote._copy_source_sas("c.bin")
    assert len(service.asked) == 1  # the key is kept for the next rename
    # One about to expire is asked for again.
    monkeypatch.setattr(sas_module, "DELEGATION_KEY_LIFETIME", dt.timedelta(minutes=1))
    remote._delegation_key = None
    remote._copy_source_sas("d.bin")
    remote._copy_source_sas("e.bin")
    assert len(service.asked) == 3


def test_a_copy_source_on_a_key_account_is_signed_with_the_key():
    token = query("?" + key_remote()._copy_source_sas("a/b.bin"))
    assert token["sr"] == "b" and token["sp"] == "r" and "skoid" not in token
    assert lifetime(token) <= COPY_SAS_LIFETIME
