"""A bad network between blobmount and its account: every mount here reaches Azurite
through a fault proxy (faultproxy.py) that drops, stalls or cuts connections, or
answers with an error status, on command. The container, read through the SDK
directly, is the truth."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from blobmount.config import AZURITE_ACCOUNT

from .conftest import blobmount, upload, wait_for
from .faultproxy import FaultProxy

# Each try waits this long for an answer; three tries and two short waits between them
# (0.5 s and 1 s, drawn up to 1.5x) make the longest a call can take, as the README
# promises. The bound adds a margin for a loaded machine: a call that kept retrying
# would take minutes, so the margin cannot hide the failure the test is for.
TIMEOUT = 2
PROMISED = 3 * TIMEOUT + 1.5 * (0.5 + 1.0)
BOUND = PROMISED + 10


@pytest.fixture
def proxy(azurite):
    with FaultProxy(azurite.port) as fault_proxy:
        yield fault_proxy


def _config(mounter, proxy: FaultProxy, container, **settings) -> Path:
    return mounter.config([{"local": "data", "container": container.container_name,
                            **settings.pop("entry", {})}],
                          endpoint=proxy.endpoint(AZURITE_ACCOUNT), **settings)


def _read_error(path: Path) -> tuple[int | None, float]:
    """The errno reading `path` failed with (None: it worked), and the seconds it took."""
    started = time.monotonic()
    try:
        path.read_bytes()
    except OSError as exc:
        return exc.errno, time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.parametrize("fault", ["stall", "drop"])
def test_an_unreachable_account_fails_uncached_reads_soon_and_serves_the_rest(
        mounter, container, proxy, fault):
    upload(container, {"kept.txt": b"kept bytes", "cold.txt": b"cold bytes",
                       "sub/deep.txt": b"deep"})
    # listing_ttl 0: every lookup and open below would ask the account.
    config = _config(mounter, proxy, container, remote_timeout=TIMEOUT, listing_ttl=0,
                     read_ahead_files=0)
    with mounter.mounted(config) as mount:
        data = mount.path("data")
        assert mount.path("data/kept.txt").read_bytes() == b"kept bytes"
        assert sorted(os.listdir(data / "sub")) == ["deep.txt"]
        proxy.set_mode(fault)

        failure, took = _read_error(mount.path("data/cold.txt"))
        assert failure == errno.EIO
        assert took < BOUND, f"EIO after {took:.1f} s"
        # Found away: what is known is served, and the rest fails, without asking the
        # account again (a clock bound here would measure the machine's load instead).
        connections = proxy.connections
        assert mount.path("data/kept.txt").read_bytes() == b"kept bytes"
        assert sorted(os.listdir(data)) == ["cold.txt", "kept.txt", "sub"]
        assert sorted(os.listdir(data / "sub")) == ["deep.txt"]
        assert _read_error(mount.path("data/sub/deep.txt"))[0] == errno.EIO
        assert proxy.connections == connections
        assert "serving the listing" in mount.log() or "cannot reach" in mount.log()

        proxy.set_mode("forward")
        # Once it answers again, the next try goes through (the first may still be
        # inside the short window in which an account found away is not asked).
        wait_for(lambda: _read_error(mount.path("data/cold.txt"))[0] is None, timeout=30,
                 interval=0.5, what="cold.txt to read once the account is back")
        assert mount.path("data/cold.txt").read_bytes() == b"cold bytes"


@pytest.mark.slow
def test_the_default_timeout_fails_a_stalled_read_well_within_a_minute(
        mounter, container, proxy):
    upload(container, {"cold.bin": b"x" * 1000})
    with mounter.mounted(_config(mounter, proxy, container, read_ahead_files=0)) as mount:
        assert os.listdir(mount.path("data")) == ["cold.bin"]
        proxy.set_mode("stall")
        failure, took = _read_error(mount.path("data/cold.bin"))
        assert failure == errno.EIO
        # The default promise: 3 x 10 s plus the waits, about 32 s; with a margin.
        assert took < 45, f"EIO after {took:.1f} s"
        proxy.set_mode("forward")


def test_a_large_file_through_azcopy_fails_soon_too(mounter, container, proxy):
    upload(container, {"big.bin": os.urandom(2 * 1024 * 1024)})
    config = _config(mounter, proxy, container, remote_timeout=TIMEOUT,
                     sdk_download_max="1MiB", read_ahead_files=0)
    with mounter.mounted(config) as mount:
        assert os.listdir(mount.path("data")) == ["big.bin"]
        proxy.set_mode("drop")
        failure, took = _read_error(mount.path("data/big.bin"))
        assert failure == errno.EIO
        assert took < BOUND, f"EIO after {took:.1f} s"
        assert mount.status()["azcopy_jobs"] == 0  # no job left retrying for minutes
        proxy.set_mode("forward")


def _azcopy_processes(parent: int) -> set[int]:
    """The AzCopy processes `parent` started (not those of another suite beside this)."""
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if not entry.name.isdigit() or "azcopy" not in (entry / "comm").read_text():
                continue
            # stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after it
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry.name))
    return found


def test_an_azcopy_job_that_stalls_midway_is_stopped(mounter, container, proxy):
    upload(container, {"big.bin": os.urandom(2 * 1024 * 1024)})
    config = _config(mounter, proxy, container, remote_timeout=TIMEOUT,
                     sdk_download_max="1MiB", read_ahead_files=0)
    with mounter.mounted(config) as mount:
        assert os.listdir(mount.path("data")) == ["big.bin"]
                # The HEADs go through (the SDK's look first, then AzCopy's); the bytes never do.
        proxy.stall_next(times=1000, method="GET")
        failure, took = _read_error(mount.path("data/big.bin"))
        assert failure == errno.EIO
        # The stall watch stops a job after 6 x remote_timeout without progress; the
        # margin covers AzCopy's start and its 2 s progress tick on a loaded machine.
        assert took < 6 * TIMEOUT + 20, f"EIO after {took:.1f} s"
        assert mount.status()["azcopy_jobs"] == 1
        assert "no progress for 12 s; stopped" in mount.log()
        assert not _azcopy_processes(mount.pid)  # the job's AzCopy is gone
        proxy.set_mode("forward")


@pytest.mark.parametrize("status", [503, 500, 429, 408])
def test_temporary_errors_are_retried(mounter, container, proxy, status):
    upload(container, {"f.txt": b"retried"})
    with mounter.mounted(_config(mounter, proxy, container, remote_timeout=TIMEOUT,
                                 read_ahead_files=0)) as mount:
        assert os.listdir(mount.path("data")) == ["f.txt"]
        before = proxy.count("GET", "/f.txt")
        proxy.fail_next(status, times=2)
        assert mount.path("data/f.txt").read_bytes() == b"retried"
        assert proxy.count("GET", "/f.txt") - before == 3  # two failures, then the bytes


@pytest.mark.parametrize(("status", "expected"), [(403, errno.EACCES), (404, errno.ENOENT)])
def test_permanent_errors_are_not_retried(mounter, container, proxy, status, expected):
    upload(container, {"f.txt": b"refused"})
    with mounter.mounted(_config(mounter, proxy, container, remote_timeout=TIMEOUT,
                                 read_ahead_files=0)) as mount:
        assert os.listdir(mount.path("data")) == ["f.txt"]
        before = proxy.count("GET", "/f.txt")
        proxy.fail_next(status, times=1)
        assert _read_error(mount.path("data/f.txt"))[0] == expected
        assert proxy.count("GET", "/f.txt") - before == 1
        assert mount.path("data/f.txt").read_bytes() == b"refused"  # nothing bad was kept


def test_a_download_cut_short_is_tried_again_and_never_served_short(
        mounter, container, proxy):
    payload = os.urandom(3 * 1024 * 1024)
    upload(container, {"cut.bin": payload})
    with mounter.mounted(_config(mounter, proxy, container, remote_timeout=TIMEOUT,
                                 read_ahead_files=0)) as mount:
        assert os.listdir(mount.path("data")) == ["cut.bin"]
        before = proxy.count("GET", "/cut.bin")
        proxy.cut_next(after=100_000)
        assert mount.path("data/cut.bin").read_bytes() == payload
        assert proxy.count("GET", "/cut.bin") - before >= 2


def test_a_large_file_reads_from_its_first_bytes_while_the_rest_is_held_up(
        mounter, container, proxy):
    payload = os.urandom(24 * 1024 * 1024)  # four ranges of 6 MiB
    upload(container, {"large.bin": payload})
    # A long timeout: the held ranges stay held until the test lets them go.
    with mounter.mounted(_config(mounter, proxy, container, remote_timeout=60)) as mount:
        assert os.listdir(mount.path("data")) == ["large.bin"]
        before = proxy.count("GET", "/large.bin")
        proxy.forward_next(method="GET")      # the first range comes ...
        proxy.stall_next(3, method="GET")     # ... the other three are held up
        with _in_thread(lambda: open(mount.path("data/large.bin"), "rb")) as reader:
            head = _in_thread(lambda: reader.read(1024 * 1024))
            assert head == payload[:1024 * 1024]
            # All four asked: the three held ones may still be on their way out.
            wait_for(lambda: proxy.count("GET", "/large.bin") - before == 4, timeout=20,
                     what="all four ranges asked for")
            proxy.set_mode("forward")  # the held ones fail; their retries get through
            assert reader.read() == payload[1024 * 1024:]
        assert mount.path("data/large.bin").read_bytes() == payload
        assert mount.status()["downloads"]["by_path"] == {"data/large.bin": 1}


def _in_thread(action, timeout: float = 20):
    """What `action` returns, failing the test if it has not returned within `timeout`
    (instead of hanging it)."""
    result = []
    worker = threading.Thread(target=lambda: result.append(action()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert result, f"no answer within {timeout} s"
    return result[0]


def test_a_range_cut_short_asks_for_what_it_lacks(mounter, container, proxy):
    payload = os.urandom(24 * 1024 * 1024)
    upload(container, {"large.bin": payload})
    with mounter.mounted(_config(mounter, proxy, container, remote_timeout=TIMEOUT)) as mount:
        assert os.listdir(mount.path("data")) == ["large.bin"]
        before = proxy.count("GET", "/large.bin")
        proxy.forward_next(method="GET")
        proxy.cut_next(after=1_000_000, times=2, method="GET")
        assert mount.path("data/large.bin").read_bytes() == payload
        # Four ranges, and one more request for the rest of each of the two cut.
        assert proxy.count("GET", "/large.bin") - before == 6


def test_async_writes_are_journaled_while_away_and_go_up_when_it_is_back(
        mounter, container, proxy):
    config = _config(mounter, proxy, container, remote_timeout=TIMEOUT,
                     entry={"upload": "async"})
    with mounter.mounted(config) as mount:
        assert os.listdir(mount.path("data")) == []
        proxy.set_mode("drop")
        written = {f"w{i}.txt": f"written while away {i}".encode() for i in range(5)}
        for name, data in written.items():
            mount.path(f"data/{name}").write_bytes(data)  # accepted: close() returns
        wait_for(lambda: len(mount.status()["uploads"]["failed"]) == 5, timeout=30,
                 what="the journal to hold five failed uploads")
        assert mount.status()["uploads"]["count"] == 5
        assert not list(container.list_blobs())

        proxy.set_mode("forward")
        # No `blobmount sync`, no remount: the journal's own retries take them up.
        wait_for(lambda: {b.name for b in container.list_blobs()} == set(written),
                 timeout=60, interval=0.25, what="the journaled files in the container")
        for name, data in written.items():
            assert container.download_blob(name).readall() == data
        wait_for(lambda: mount.status()["uploads"]["count"] == 0, timeout=10,
                 what="the journal to empty")


def test_sync_status_reports_pending_uploads_while_away(mounter, container, proxy):
    config = _config(mounter, proxy, container, remote_timeout=TIMEOUT,
                     entry={"upload": "async"})
    with mounter.mounted(config) as mount:
        mount.path("data/late.txt").write_bytes(b"late")
        wait_for(lambda: {b.name for b in container.list_blobs()} == {"late.txt"},
                 what="the first upload")
        proxy.set_mode("stall")
        mount.path("data/late.txt").write_bytes(b"later")
        result = blobmount("sync", str(mount.mountpoint), timeout=120)
        assert result.returncode != 0
        assert "late.txt" in result.stderr + result.stdout
        proxy.set_mode("forward")
        wait_for(lambda: container.download_blob("late.txt").readall() == b"later",
                 timeout=60, interval=0.25, what="the second version in the container")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_upload_whose_answer_is_lost_is_no_conflict(mounter, container, proxy, mode):
    with mounter.mounted(_config(mounter, proxy, container, remote_timeout=TIMEOUT,
                                 entry={"upload": mode})) as mount:
        for version in (b"first", b"second"):
            before = proxy.count("PUT", "/new.txt")
            # Azurite stores the bytes, but the answer never arrives: the retry finds
            # the blob already there (or changed), which is no conflict when the bytes
            # there are the ones being put.
            proxy.cut_next(after=0, method="PUT")
            mount.path("data/new.txt").write_bytes(version)
            wait_for(lambda v=version: {b.name for b in container.list_blobs()} == {"new.txt"}
                     and container.download_blob("new.txt").readall() == v,
                     what="the new version in the container")
            wait_for(lambda: mount.status()["uploads"]["count"] == 0, what="an empty journal")
            assert proxy.count("PUT", "/new.txt") - before >= 2  # the lost try, and a retry
        assert "conflict" not in mount.log()
        assert {b.name for b in container.list_blobs()} == {"new.txt"}
