"""AzCopy jobs against a private Azurite: downloads, batches, failures, cancellation."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
import trio
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

from blobmount.azcopy import AzCopy
from blobmount.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite
from blobmount.errors import TransferError
from blobmount.threads import Threads
from blobmount.tools import find_azcopy

pytestmark = pytest.mark.integration

SAS_LIFETIME = dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def azurite(request: pytest.FixtureRequest) -> Azurite:
    service = Azurite()
    request.addfinalizer(service.stop)
    service.start()
    return service


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> ContainerClient:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    return client.create_container(f"azcopy-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def azcopy(tmp_path: Path) -> AzCopy:
    return AzCopy(find_azcopy(), tmp_path / "work", threads=Threads(4))


def blob_url(container: ContainerClient, name: str) -> tuple[str, str]:
    """A URL with a short-lived read SAS for one blob, and that SAS's signature."""
    expiry = dt.datetime.now(dt.UTC) + SAS_LIFETIME
    sas = generate_blob_sas(
        ACCOUNT_NAME,
        container.container_name,
        name,
        account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions(read=True),
        expiry=expiry,
    )
    return f"{container.url}/{name}?{sas}", signature(sas)


def folder_url(container: ContainerClient, prefix: str) -> tuple[str, str]:
    """A URL of a virtual folder with a short-lived read+list SAS (for batches)."""
    expiry = dt.datetime.now(dt.UTC) + SAS_LIFETIME
    sas = generate_container_sas(
        ACCOUNT_NAME,
        container.container_name,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=expiry,
    )
    return f"{container.url}/{prefix}?{sas}", signature(sas)


def signature(sas: str) -> str:
    return next(part.split("=", 1)[1] for part in sas.split("&") if part.startswith("sig="))


def leftovers(azcopy: AzCopy) -> list[Path]:
    return list(azcopy.work_dir.iterdir()) if azcopy.work_dir.exists() else []


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_download_one_blob(container, azcopy, tmp_path):
    data = os.urandom(300_000)
    container.upload_blob("one/data.bin", data)
    url, _ = blob_url(container, "one/data.bin")
    target = tmp_path / "data.bin"

    started = time.monotonic()
    summary = trio.run(lambda: azcopy.copy(url, str(target), from_to="BlobLocal"))
    elapsed = time.monotonic() - started

    assert target.read_bytes() == data
    assert summary.status == "Completed"
    assert (summary.transfers_completed, summary.transfers_failed) == (1, 0)
    assert summary.bytes_transferred == len(data)
    assert leftovers(azcopy) == []
    print(f"one AzCopy job: {elapsed:.2f} s")


@pytest.mark.parametrize("scope", ["blob", "container"])
def test_missing_blob_fails_without_revealing_the_sas(container, azcopy, tmp_path, scope):
    name = f"no/such/{scope}.bin"
    if scope == "blob":
        url, sig = blob_url(container, name)
        # A blob that is not there might be a folder: AzCopy tries to list it, which a SAS
        # for one blob does not allow, and reports that instead of a 404.
        reason = "AuthorizationFailure"
    else:
        url, sig = folder_url(container, name)
        reason = "The specified file was not found"
    with pytest.raises(TransferError) as caught:
        trio.run(lambda: azcopy.copy(url, str(tmp_path / "x"), from_to="BlobLocal"))
    text = str(caught.value)
    assert "\n" not in text
    assert sig not in text and unquote(sig) not in text
    assert name in text and reason in text
    assert leftovers(azcopy) == []


def test_batch_of_three_in_one_job(container, azcopy, tmp_path):
    blobs = {f"batch/f{i}.bin": bytes([i]) * (1000 + i) for i in range(3)}
    for name, data in blobs.items():
        container.upload_blob(name, data)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{Path(name).name}\n" for name in blobs))
    url, _ = folder_url(container, "batch")
    target = tmp_path / "out"
    target.mkdir()

    summary = trio.run(
        lambda: azcopy.copy(url, str(target), from_to="BlobLocal", list_of_files=listing)
    )

    assert summary.transfers_completed == 3
    assert summary.bytes_transferred == sum(len(data) for data in blobs.values())
    for name, data in blobs.items():
        # AzCopy puts the source folder's last segment under the destination.
        assert (target / name).read_bytes() == data
    assert leftovers(azcopy) == []


def test_batch_with_a_listed_blob_missing_fails(container, azcopy, tmp_path):
    container.upload_blob("partial/here.bin", b"here")
    listing = tmp_path / "list.txt"
    listing.write_text("here.bin\nnot-here.bin\n")
    url, sig = folder_url(container, "partial")
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(TransferError, match="only 1 of the 2 files listed") as caught:
        trio.run(lambda: azcopy.copy(url, str(target), from_to="BlobLocal", list_of_files=listing))
    assert sig not in str(caught.value)
    assert leftovers(azcopy) == []


def test_failed_transfer_reports_azcopy_reason(container, azcopy, tmp_path):
    container.upload_blob("clash/file.bin", b"data")
    url, sig = blob_url(container, "clash/file.bin")
    # A folder where the file should go makes the download's final rename fail.
    target = tmp_path / "out"
    (target / "file.bin" / "occupied").mkdir(parents=True)

    with pytest.raises(TransferError) as caught:
        trio.run(lambda: azcopy.copy(url, str(target), from_to="BlobLocal"))
    text = str(caught.value)
    assert "1 of 1 transfers failed" in text and "DOWNLOADFAILED" in text
    assert sig not in text and unquote(sig) not in text
    assert leftovers(azcopy) == []


def test_upload_refused_by_a_read_only_sas(container, azcopy, tmp_path):
    source = tmp_path / "up.bin"
    source.write_bytes(b"upload me")
    url, sig = blob_url(container, "refused/up.bin")  # read permission only

    with pytest.raises(TransferError) as caught:
        trio.run(lambda: azcopy.copy(str(source), url, from_to="LocalBlob"))
    text = str(caught.value)
    # AzCopy cancels the job on an authentication failure (counting the transfer failed,
    # or not, depending on timing), and says why in a note and in its log.
    assert "Cancelled" in text and "403" in text
    assert sig not in text and unquote(sig) not in text
    assert not container.get_blob_client("refused/up.bin").exists()
    assert leftovers(azcopy) == []


def test_cancelling_a_job_stops_azcopy(container, azcopy, tmp_path, caplog):
    container.upload_blob("cancel/file.bin", b"data")
    url, _ = blob_url(container, "cancel/file.bin")
    target = tmp_path / f"cancelled-{uuid.uuid4().hex}"

    async def main() -> None:
        with trio.move_on_after(0.5):
            await azcopy.copy(url, str(target), from_to="BlobLocal")
            pytest.fail("the job finished before it was cancelled")

    with caplog.at_level(logging.WARNING, logger="blobmount.azcopy"):
        trio.run(main)
    # AzCopy exits on SIGTERM: no SIGKILL was needed after the grace period.
    assert not [r for r in caplog.records if "ignored SIGTERM" in r.getMessage()]
    assert processes_mentioning(target.name) == []
    assert leftovers(azcopy) == []
