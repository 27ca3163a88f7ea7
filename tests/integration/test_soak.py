"""The soak test: reads and writes for a bounded time while the network between
blobmount and Azurite breaks at random, then checks through the SDK that nothing was
lost or corrupted. Not part of the default suite: `BLOBMOUNT_SOAK=SECONDS` runs it
(`BLOBMOUNT_SOAK=600 scripts/test tests/integration/test_soak.py`)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from blobmount.config import AZURITE_ACCOUNT

from .conftest import blobmount, upload, wait_for
from .faultproxy import FaultProxy

SECONDS = float(os.environ.get("BLOBMOUNT_SOAK", "0") or 0)
pytestmark = pytest.mark.skipif(SECONDS <= 0, reason="set BLOBMOUNT_SOAK=SECONDS to soak")

SEEDED = 40      # blobs in the container before the mount, read (and some rewritten)
WRITTEN = 30     # names the writer cycles through, each rewritten many times
FAULTS = [("forward", 3.0), ("drop", 2.0), ("stall", 3.0), ("cut", 2.0), ("errors", 2.0)]


def _rss(pid: int) -> int:
    """The resident set of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _payload(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 100, 4096, 70_000, 300_000])
    return rng.randbytes(size)


def test_nothing_is_lost_or_corrupted_under_random_faults(mounter, container, azurite):
    rng = random.Random(int(os.environ.get("BLOBMOUNT_SOAK_SEED", "0")) or None)
    seeded = {f"seed/{i:03d}.bin": _payload(rng) for i in range(SEEDED)}
    upload(container, seeded)
    digests = {name: {hashlib.sha256(data).hexdigest()} for name, data in seeded.items()}
    latest: dict[str, bytes] = {}  # name under data/ -> the bytes last written there
    problems: list[str] = []
    stop = threading.Event()

    with FaultProxy(azurite.port) as proxy:
        config = mounter.config(
            [{"local": "data", "container": container.container_name, "upload": "async"}],
            endpoint=proxy.endpoint(AZURITE_ACCOUNT), remote_timeout=2, listing_ttl=1)
        mount = mounter.mount(config)
        try:
            def writer() -> None:
                wrng = random.Random(rng.random())
                while not stop.is_set():  # a fault may fail the first tries
                    try:
                        mount.path("data/out").mkdir(exist_ok=True)
                        break
                    except OSError:
                        stop.wait(0.5)
                while not stop.is_set():
                    name = f"out/{wrng.randrange(WRITTEN):02d}.bin"
                    data = _payload(wrng)
                    try:
                        mount.path(f"data/{name}").write_bytes(data)
                    except OSError as exc:  # async: a write must always be accepted
                        problems.append(f"write {name}: {exc}")
                        continue
                    latest[name] = data

            def reader() -> None:
                rrng = random.Random(rng.random())
                while not stop.is_set():
                    name = f"seed/{rrng.randrange(SEEDED):03d}.bin"
                    try:
                        data = mount.path(f"data/{name}").read_bytes()
                    except OSError:
                        continue  # EIO while the account is away is allowed
                    if hashlib.sha256(data).hexdigest() not in digests[name]:
                        problems.append(f"read {name}: {len(data)} bytes that were never"
                                        " written")

            def faults() -> None:
                frng = random.Random(rng.random())
                while not stop.is_set():
                    fault, longest = frng.choice(FAULTS)
                    if fault == "cut":
                        proxy.cut_next(after=frng.randrange(1, 50_000), times=3)
                    elif fault == "errors":
                        proxy.fail_next(frng.choice([500, 503, 429]), times=3)
                    else:
                        proxy.set_mode(fault)
                    stop.wait(frng.uniform(0.2, longest))
                    proxy.set_mode("forward")
                    stop.wait(frng.uniform(0.5, 2.0))

            workers = [threading.Thread(target=work, daemon=True)
                       for work in (writer, reader, reader, faults)]
            at_mount = _rss(mount.pid)
            for worker in workers:
                worker.start()
            # What the first minutes allocate (thread pools, sqlite's page cache, the
            # SDK's sessions) is the daemon warming up, not growth: measured from here.
            warm_up = min(SECONDS / 10, 60.0)
            stop.wait(warm_up)
            at_start = _rss(mount.pid)
            stop.wait(SECONDS - warm_up)
            at_end = _rss(mount.pid)
            stop.set()
            rss = (f"daemon RSS: {at_mount / 1024:.1f} MiB at mount, {at_start / 1024:.1f} MiB"
                   f" after {warm_up:.0f} s, {at_end / 1024:.1f} MiB at the end")
            print(rss)
            for worker in workers:
                worker.join(timeout=120)
                assert not worker.is_alive(), "a worker hung on the mount"
            proxy.set_mode("forward")

            # Everything journaled goes up once the network is good again.
            wait_for(lambda: blobmount("sync", str(mount.mountpoint)).returncode == 0,
                     timeout=180, interval=1, what="`blobmount sync` to succeed")
            in_container = {blob.name for blob in container.list_blobs()}
            for name, data in latest.items():
                assert name in in_container, f"{name} was lost"
                assert container.download_blob(name).readall() == data, f"{name} differs"
            for name, data in seeded.items():
                assert container.download_blob(name).readall() == data
            assert not problems, "\n".join(problems[:20])
            # A lost answer is no conflict: only this mount ever wrote these files.
            assert "conflict:" not in mount.log()
            assert len(latest) == WRITTEN or SECONDS < 30
            assert at_end <= at_start * 1.2, f"the daemon grew by more than a fifth: {rss}"
        except BaseException:
            stop.set()
            mounter.cleanup()
            raise
        else:
            mounter.unmount(mount)
