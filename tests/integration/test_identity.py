"""An account known by an identity alone: Azurite over HTTPS with OAuth (`--oauth
basic`), the daemon signed in by DefaultAzureCredential through a managed identity
endpoint (App Service's IDENTITY_ENDPOINT, served here). A rename copies the blob
server-side with a user delegation SAS for its source; AzCopy logs in as the same
identity (AZCOPY_AUTO_LOGIN_TYPE=MSI) and is given no SAS at all."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from blobmount.azurite import ACCOUNT_NAME, Azurite

from .conftest import Mounter, blobmount, upload

pytestmark = pytest.mark.integration

IDENTITY_HEADER = "blobmount-test-identity-header"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
#: What DefaultAzureCredential would otherwise find on this machine.
OTHER_CREDENTIALS = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                     "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                     "MSI_ENDPOINT", "AZCOPY_AUTO_LOGIN_TYPE")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _token() -> str:
    """A bearer token as Entra ID would issue for storage; Azurite checks its claims
    (issuer, audience, times), not its signature."""
    now = int(time.time())
    claims = {"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{TENANT}/",
              "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
              "oid": "0b5c6e2a-6a3c-4b8e-9d61-1f7c2b3f9a10", "tid": TENANT}

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


class _IdentityEndpoint(BaseHTTPRequestHandler):
    """App Service's managed identity endpoint (api-version 2019-08-01)."""

    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            self.send_error(401)
            return
        type(self).asked.append(self.path)
        body = json.dumps({"access_token": _token(), "expires_on": str(int(time.time()) + 3600),
                           "resource": "https://storage.azure.com", "token_type": "Bearer"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def oauth_azurite(tls) -> Iterator[Azurite]:
    # Azurite checks a copy's source SAS by asking itself, over HTTPS: it must trust
    # its own certificate.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NODE_EXTRA_CA_CERTS", str(tls[0]))
        with Azurite(tls=tls) as service:
            yield service


@pytest.fixture
def identity_endpoint(monkeypatch, tls) -> Iterator[list[str]]:
    """The daemon (a child of this process) signs in through this endpoint."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IdentityEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in OTHER_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_port}/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[0]))  # the daemon trusts Azurite
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))  # and so does AzCopy
    _IdentityEndpoint.asked = []
    try:
        yield _IdentityEndpoint.asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_rename_on_an_account_known_by_an_identity_alone(oauth_azurite, identity_endpoint,
                                                          tls, tmp_path):
    service = BlobServiceClient.from_connection_string(
        oauth_azurite.connection_string, connection_verify=str(tls[0]))
    container = service.create_container("identity")
    try:
        container.upload_blob("old.txt", b"moved by a user delegation SAS\n")
        container.upload_blob("dir/a.txt", b"a\n")
        big = os.urandom(300_000)
        batch = [os.urandom(100_000) for _ in range(12)]
        upload(container, {"big.bin": big,
                           **{f"batch/f{i}.bin": data for i, data in enumerate(batch)}})
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "cache_dir": str(tmp_path / "cache"),
            "accounts": {"id": {"account_name": ACCOUNT_NAME,
                                "endpoint": oauth_azurite.endpoint}},  # no key, no SAS
            "mounts": [{"local": "d", "account": "id", "container": "identity"}],
            "sdk_download_max": "64KiB"}))  # so that reads go through AzCopy jobs too
        mounter = Mounter(tmp_path, oauth_azurite)
        try:
            mount = mounter.mount(config)
            root = mount.path("d")
            assert (root / "old.txt").read_bytes() == b"moved by a user delegation SAS\n"
            (root / "old.txt").rename(root / "new.txt")
            (root / "dir").rename(root / "moved")
            assert (root / "new.txt").read_bytes() == b"moved by a user delegation SAS\n"
            # AzCopy, logged in as the identity: one blob, then a prefetch batch.
            assert (root / "big.bin").read_bytes() == big
            jobs = mount.status()["azcopy_jobs"]
            assert jobs == 1
            blobmount("prefetch", str(root / "batch"), check=True)  # exit 1 if one failed
            assert mount.status()["azcopy_jobs"] == jobs + 1
            for i in range(12):
                assert (root / f"batch/f{i}.bin").read_bytes() == batch[i]
            assert "access denied" not in mount.log()
            mounter.unmount(mount)
        finally:
            mounter.cleanup()
        names = sorted(blob.name for blob in container.list_blobs()
                       if not blob.name.startswith(("big.bin", "batch/")))
        assert names == ["moved", "moved/a.txt", "new.txt"]  # 'moved': its folder marker
        assert container.download_blob("new.txt").readall() == (
            b"moved by a user delegation SAS\n")
        assert identity_endpoint, "the daemon never asked the identity endpoint for a token"
    finally:
        container.delete_container()
        service.close()
