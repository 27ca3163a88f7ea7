"""Large files by blocks, side by side with their peers, in one run.

    .venv/bin/python benchmarks/blocks.py [--size 3GiB] [--cache 512MiB] [--runs N]

Starts its own Azurite (blobs on disk: a blob of GiBs would not fit its memory well),
puts one blob of --size, and measures, each run on a cold cache:
- time to first byte: open() and a 4 KiB read at the start of the blob, against one
  ranged SDK GET of the same 4 KiB;
- 100 random 4 KiB reads (the same offsets for every tool): blobmount, the same reads
  as ranged SDK GETs, rclone mount; with the bytes blobmount fetched;
- a sequential read (dd, 1 MiB) through a --cache limit, against AzCopy downloading
  the blob, rclone mount, and the blob by SDK GETs of 4 MiB ranges checked against their
  MD5 (what blobmount asks for) and of 8 MiB unchecked (what AzCopy asks for); with
  blobmount's peak cache size (sampled) and peak RSS;
- a 4 KiB edit in the middle of the blob, and an append of 1 MiB, each until the blob
  holds it (close() in sync mode), against AzCopy uploading a file of the blob's size.
Prints a Markdown table of medians with ratios (run.py's), and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import yaml

from blobmount.azurite import Azurite
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY, MiB, parse_size

sys.path.insert(0, str(Path(__file__).parent))
import run as base  # noqa: E402  (run.py, beside this file)

BLOB = "huge/blob.bin"
READS = 100
#: The largest range the service sends an MD5 of (decide.RANGE_MD5_MAX).
CHECKED_RANGE = 4 * MiB


class BlockBench(base.Bench):
    """run.py's Bench, with a blobmount whose cache has a limit."""

    block_read_min: str | None = None  # None: the daemon's default

    def blobmount_limited(self, cache_max: int | None) -> Path:
        path = self.work / "blobmount-blocks.yaml"
        entry = {"local": "c", "account": "az", "container": base.CONTAINER}
        if cache_max:
            entry["cache_max_bytes"] = cache_max
        top = {"block_read_min": self.block_read_min} if self.block_read_min else {}
        path.write_text(yaml.safe_dump({
            "cache_dir": str(self.work / "bm-cache"),
            "accounts": {"az": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                                "endpoint": self.azurite.endpoint}},
            "mounts": [entry], **top}))
        path.chmod(0o600)
        return path

    @contextmanager
    def mounted(self, cache_max: int | None = None) -> Iterator[Path]:
        shutil.rmtree(self.work / "bm-cache", ignore_errors=True)
        mountpoint = self.work / "bm-mnt"
        mountpoint.mkdir(exist_ok=True)
        base.run(sys.executable, "-m", "blobmount", "mount", str(mountpoint), "--config",
            str(self.blobmount_limited(cache_max)), "--log-file", str(self.blobmount_log))
        self.blobmount_pid = json.loads(base.run(sys.executable, "-m", "blobmount", "status",
                                            str(mountpoint), "--json").stdout)["pid"]
        try:
            yield mountpoint / "c"
        finally:
            base.unmount(mountpoint, self.blobmount_pid, self.blobmount_log)

    def cached_bytes(self, root: Path) -> int:
        listed = json.loads(base.run(sys.executable, "-m", "blobmount", "cache", "ls", str(root),
                                "--json").stdout)
        return sum(item["size"] for item in listed)


def put_blob(bench: BlockBench, size: int) -> None:
    """The blob, in pieces of random bytes (a few distinct ones, to keep this quick)."""
    pieces = [os.urandom(8 * MiB) for _ in range(4)]

    class Stream:
        sent = 0

        def read(self, wanted: int = -1) -> bytes:
            wanted = size - self.sent if wanted < 0 else min(wanted, size - self.sent)
            out = bytearray()
            while len(out) < wanted:
                at = (self.sent + len(out)) % (8 * MiB)
                piece = pieces[(self.sent + len(out)) // (8 * MiB) % 4]
                out += piece[at:at + wanted - len(out)]
            self.sent += len(out)
            return bytes(out)

    bench.container.create_container()
    bench.container.upload_blob(BLOB, Stream(), length=size, max_concurrency=4)


def read_at(path: Path, offsets: list[int]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            os.pread(fd, 4096, offset)
    finally:
        os.close(fd)


def first_byte(bench: BlockBench, results: base.Results) -> None:
    blob = bench.container.get_blob_client(BLOB)
    for _ in range(bench.scale.runs):
        with bench.mounted() as root:
            (root / BLOB).stat()  # listed: the open and the read are what is timed
            results.add("first_byte", "blobmount", base.timed(lambda: read_at(root / BLOB, [0])))
        results.add("first_byte", "sdk ranged GET", base.timed(
            lambda: blob.download_blob(offset=0, length=4096).readall()))


def random_reads(bench: BlockBench, results: base.Results, size: int) -> None:
    rng = random.Random(14)
    offsets = [rng.randrange(size - 4096) // 4096 * 4096 for _ in range(READS)]
    blob = bench.container.get_blob_client(BLOB)
    fetched = []
    for _ in range(bench.scale.runs):
        with bench.mounted() as root:
            (root / BLOB).stat()
            results.add("random_4k_x100", "blobmount", base.timed(
                lambda: read_at(root / BLOB, offsets)))
            fetched.append(bench.cached_bytes(root))
        results.add("random_4k_x100", "sdk ranged GETs", base.timed(
            lambda: [blob.download_blob(offset=o, length=4096).readall() for o in offsets]))
        if bench.rclone:
            with bench.rclone_mount() as root:
                (root / BLOB).stat()
                results.add("random_4k_x100", "rclone", base.timed(
                    lambda: read_at(root / BLOB, offsets)))
    results.notes["random_4k_x100"] = (
        f"blobmount fetched {max(fetched) / MiB:.0f} MiB of {size / MiB:.0f} MiB"
        f" ({100 * max(fetched) / size:.1f}%)")


def sequential(bench: BlockBench, results: base.Results, size: int, cache_max: int) -> None:
    target = bench.work / "azcopy.bin"
    peaks, rss = [], []
    for _ in range(bench.scale.runs):
        with bench.mounted(cache_max) as root:
            (root / BLOB).stat()
            peak = _Sampler(bench.work / "bm-cache")
            with peak:
                results.add("sequential", "blobmount dd", base.timed(lambda: _dd(root / BLOB)))
            peaks.append(peak.peak)
            with open(f"/proc/{bench.blobmount_pid}/status") as status:
                rss.append(int(next(line for line in status
                                    if line.startswith("VmHWM")).split()[1]) * 1024)
        try:
            results.add("sequential", "azcopy", base.timed(
                lambda: bench.azcopy_download(BLOB, target)))
        finally:
            target.unlink(missing_ok=True)
        results.add("sequential", "sdk 4 MiB ranges, MD5 checked", base.timed(
            lambda: ranged_gets(bench, size, CHECKED_RANGE, checked=True)))
        results.add("sequential", "sdk 8 MiB ranges, unchecked", base.timed(
            lambda: ranged_gets(bench, size, 2 * CHECKED_RANGE, checked=False)))
        if bench.rclone:
            with bench.rclone_mount() as root:
                results.add("sequential", "rclone dd", base.timed(lambda: _dd(root / BLOB)))
    results.notes["sequential"] = (
        f"{size / MiB:.0f} MiB through cache_max_bytes {cache_max / MiB:.0f} MiB: peak cache"
        f" {max(peaks) / MiB:.0f} MiB, daemon peak RSS {max(rss) / MiB:.0f} MiB")


def ranged_gets(bench: BlockBench, size: int, step: int, *, checked: bool) -> None:
    """The whole blob by ranged GETs of `step` bytes, 16 side by side, the bodies
    dropped: the least a reader asks of the service, with each range checked against
    the MD5 the service sends of it (at most 4 MiB), or unchecked (AzCopy's 8 MiB).
    Azurite computes an MD5 of every range up to 4 MiB, asked for or not, by reading it
    twice; that cost is its own, and real Azure's is not known here."""
    blob = bench.container.get_blob_client(BLOB)

    def get(offset: int) -> None:
        blob.download_blob(offset=offset, length=min(step, size - offset),
                           validate_content=checked).readall()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(get, range(0, size, step)))


def edits(bench: BlockBench, results: base.Results, size: int) -> None:
    """Edits by blocks (patch.py): the committed blocks an edit does not touch are kept
    as they are, the ones it touches go up again; against AzCopy uploading the whole
    file (to another blob)."""
    local = bench.work / "upload.bin"
    with open(local, "wb") as out:  # sparse: AzCopy reads it all the same
        out.truncate(size)
    blob = bench.container.get_blob_client(BLOB)
    middle = size // 2 + 100

    def edit(root: Path) -> None:
        with open(root / BLOB, "r+b", buffering=0) as file:
            file.seek(middle)
            file.write(os.urandom(4096))

    def append(root: Path) -> None:
        with open(root / BLOB, "ab", buffering=0) as file:
            file.write(os.urandom(MiB))

    workloads = (("edit_4k_middle", edit), ("append_1m", append))
    try:
        for run in range(bench.scale.runs):
            for workload, change in workloads:
                with bench.mounted() as root:
                    (root / BLOB).stat()
                    before = blob.get_blob_properties().etag
                    seconds = base.timed(lambda: change(root))
                    assert blob.get_blob_properties().etag != before, "the blob did not change"
                results.add(workload, "blobmount", seconds)
                _progress(f"run {run + 1}: {workload} blobmount {seconds:.3f} s")
            # One upload per run is the peer of both (it is the same whole-file upload).
            seconds = base.timed(lambda: bench.azcopy_upload(local, "huge/upload.bin"))
            for workload, _ in workloads:
                results.add(workload, "azcopy upload", seconds)
            _progress(f"run {run + 1}: azcopy upload {seconds:.3f} s")
        kept = bench.container.get_blob_client(BLOB).get_block_list("committed")[0]
        results.notes["edit_4k_middle"] = f"the blob has {len(kept)} committed blocks"
    finally:
        local.unlink(missing_ok=True)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _dd(path: Path) -> None:
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], check=True,
                   capture_output=True)


class _Sampler:
    """The largest number of bytes the files under a folder took on the disk, sampled
    every 50 ms while the block runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            total = 0
            for root, _dirs, files in os.walk(self.folder):
                for name in files:
                    with suppress(FileNotFoundError):  # evicted meanwhile
                        total += os.stat(os.path.join(root, name)).st_blocks * 512
            self.peak = max(self.peak, total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3GiB", help="the blob's size (default 3GiB)")
    parser.add_argument("--cache", default="512MiB", help="cache_max_bytes for the"
                        " sequential read (default 512MiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (median taken)")
    parser.add_argument("--only", nargs="*",
                        choices=("first_byte", "random", "sequential", "edits"))
    parser.add_argument("--block-read-min", help="the mount's block_read_min (default: its"
                        " own, 1 GiB); the suite's smoke run reads a small blob by blocks")
    args = parser.parse_args()
    size, cache_max = parse_size(args.size), parse_size(args.cache)
    scale = base.Scale(0, 0, 0, 0, 0, 0, 0, 0, args.runs)
    results = base.Results()
    started = time.monotonic()
    only = args.only or ("first_byte", "random", "sequential", "edits")
    with tempfile.TemporaryDirectory(prefix="blobmount-blocks-") as scratch, \
            Azurite(location=Path(scratch) / "azurite") as azurite:
        bench = BlockBench(azurite, Path(scratch), scale)
        bench.rclone = base.find_rclone()
        bench.block_read_min = args.block_read_min
        print(f"putting {size // MiB} MiB ...", file=sys.stderr, flush=True)
        put_blob(bench, size)
        if "first_byte" in only:
            first_byte(bench, results)
        if "random" in only:
            random_reads(bench, results, size)
        if "sequential" in only:
            sequential(bench, results, size, cache_max)
        if "edits" in only:
            edits(bench, results, size)
    print(f"{base.table(results)}\n\n{base.rclone_version(bench.rclone)}; {base.machine()};"
          f" {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
