"""Real workloads for run.py, and what each one asks of the account.

- `git clone` of this project's own history (a mirror made from the checkout the
  benchmark runs from: no network; --smoke: a repository of the package files) onto
  the mount, by git's pack protocol;
- `tar x` of a tarball of real packages from the venv's site-packages (trio, yaml,
  click and trio's dependencies: a few hundred files);
- `ls -lR` of the same tree (put in the container by the SDK, with each file's mtime
  in rclone's metadata key) in a fresh mount;
- `python -S -c 'import trio, yaml, click'` with that tree first on sys.path, in a
  fresh mount.

Each is timed through blobmount (both upload modes for the writes) and rclone mount
on the same data, a fresh mount and empty cache each run. Requests to the account
are counted too: blobmount's from its own /metrics, rclone's in one more run through
a counting proxy on loopback (so that the proxy costs rclone nothing in the timed
runs). A workload's requests include the uploads after it: the count is taken once
nothing is waiting to go up (`blobmount sync`; rclone's `vfs/stats`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from countproxy import CountingProxy
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
#: the seeded package tree, for `ls -lR` and `import`
TREE = "pkgs"
#: rclone's metadata key for a file's mtime, which blobmount reads too
MTIME_KEY = "mtime"

Mount = Callable[[], AbstractContextManager[Path]]


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _quiet(*args: str, **kwargs) -> None:
    subprocess.run(args, check=True, capture_output=True, **kwargs)


# -- data ---------------------------------------------------------------------------------


def rclone_mtime(mtime_ns: int) -> str:
    """`mtime` metadata as rclone writes it: 2017-07-14T02:40:00.123456789Z."""
    seconds, nanos = divmod(mtime_ns, 10**9)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def package_files(names: tuple[str, ...]) -> list[Path]:
    """The venv's files of these top-level packages and their .dist-info folders,
    relative to site-packages."""
    site = Path(sysconfig.get_paths()["purelib"])
    wanted = {name.lower() for name in names}
    tops = [entry for entry in sorted(site.iterdir())
            if entry.name.lower().split("-")[0].split(".")[0] in wanted]
    files = [path for top in tops for path in sorted(top.rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts]
    return [path.relative_to(site) for path in files]


class RealData:
    """What the real workloads use, made once per benchmark run in its work folder."""

    def __init__(self, bench) -> None:
        self.bench = bench
        scale = bench.scale
        self.site = Path(sysconfig.get_paths()["purelib"])
        self.files = package_files(scale.packages)
        self.imports = scale.imports
        self.tarball = bench.work / "packages.tar"
        _quiet("tar", "-C", str(self.site), "-cf", str(self.tarball),
               *map(str, self.files))
        self.repository = bench.work / "repository.git"
        if scale.git_repository == "project":
            self.described = "this project's history"
            _quiet("git", "clone", "--quiet", "--mirror", "--no-local", str(ROOT),
                   str(self.repository), env=_git_env())
        else:
            self.described = "a repository of the packages' files"
            self.package_repository()
        self.seed_tree()

    def package_repository(self) -> None:
        """A small repository (for --smoke): the packages' files, committed once."""
        work = self.bench.work / "package-repository"
        work.mkdir()
        _quiet("tar", "-C", str(work), "-xf", str(self.tarball))
        env = {**_git_env(), "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
        for args in (("init", "--quiet"), ("add", "."), ("commit", "--quiet", "-m", "packages")):
            _quiet("git", "-C", str(work), *args, env=env)
        _quiet("git", "clone", "--quiet", "--mirror", str(work), str(self.repository), env=env)

    def seed_tree(self) -> None:
        """The package tree in the container, each file with its mtime as metadata (as
        rclone and blobmount write it), so that both show the files' own times."""
        def put(relative: Path) -> None:
            source = self.site / relative
            self.bench.container.upload_blob(
                f"{TREE}/{relative}", source.read_bytes(), overwrite=True,
                metadata={MTIME_KEY: rclone_mtime(source.stat().st_mtime_ns)})

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(put, self.files))


def real_data(bench) -> RealData:
    if getattr(bench, "real", None) is None:
        bench.real = RealData(bench)
    return bench.real


def _git_env() -> dict[str, str]:
    # No user or system config: the same clone whoever runs it.
    return {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0"}


# -- counting -----------------------------------------------------------------------------


def blobmount_requests(url: str) -> Counter[str]:
    """blobmount's requests to the account so far, by op (every status)."""
    with urllib.request.urlopen(url, timeout=60) as answer:
        text = answer.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "blobmount_remote_requests_total":
                counts[sample.labels["op"]] += int(sample.value)
    return counts


def blobmount_settle(root: Path) -> None:
    """Until every pending upload of the mount at root's parent is in the container."""
    _quiet(sys.executable, "-m", "blobmount", "sync", str(root.parent))


def rclone_settle(rc_port: int, timeout: float = 300) -> None:
    """Until rclone has nothing queued or uploading (its write-back waits 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{rc_port}/vfs/stats",
                                         data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            cache = json.load(answer).get("diskCache", {})
        if cache.get("uploadsInProgress", 0) + cache.get("uploadsQueued", 0) == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("rclone's uploads did not finish")
        time.sleep(0.2)


# -- running ------------------------------------------------------------------------------


def measure(bench, results, workload: str, action: Callable[[Path, str], None], *,
            writes: bool) -> None:
    """`action(root, name)` timed in a fresh mount of each tool, `bench.scale.runs`
    times; blobmount's requests from its metrics, rclone's in one more run through
    the counting proxy. `name` is a folder name no other run used. Writes go through
    both of blobmount's upload modes; reads also with its read-ahead off (it fetches
    files of a folder that the program may never open)."""
    if writes:
        tools: list[tuple[str, Mount]] = [
            (f"blobmount {mode}", partial(bench.blobmount, upload=mode))
            for mode in ("sync", "async")]
    else:
        tools = [("blobmount", bench.blobmount),
                 ("blobmount no read-ahead", partial(bench.blobmount,
                                                     options={"read_ahead_files": 0}))]
    if bench.rclone:
        tools.append(("rclone", bench.rclone_mount))
    for run_index in range(bench.scale.runs):
        for tool, mount in tools:
            name = f"{tool.replace(' ', '-')}-{run_index}"
            with mount() as root:
                if tool.startswith("blobmount"):
                    before = blobmount_requests(bench.metrics_url)
                results.add(workload, tool, _timed(lambda: action(root, name)))
                if tool.startswith("blobmount"):
                    blobmount_settle(root)
                    made = blobmount_requests(bench.metrics_url)
                    made.subtract(before)
                    results.count(workload, tool, +made)
    if bench.rclone:
        with CountingProxy(bench.azurite.port) as proxy, \
                bench.rclone_mount(endpoint=proxy.endpoint(bench.account), rc=True) as root:
            proxy.take()  # what mounting cost is not the workload's
            action(root, "rclone-counted")
            rclone_settle(bench.rclone_rc_port)
            made, log = proxy.take()
        results.count(workload, "rclone", made)
        _write_log(bench.work / f"requests-rclone-{workload}.log", log)
    if bench.request_logs:
        for tool, mount in tools:
            if not tool.startswith("blobmount"):
                continue
            with CountingProxy(bench.azurite.port) as proxy, \
                    mount(endpoint=proxy.endpoint(bench.account)) as root:
                before = blobmount_requests(bench.metrics_url)
                proxy.take()
                action(root, f"{tool.replace(' ', '-')}-logged")
                blobmount_settle(root)
                made, log = proxy.take()
                counted = blobmount_requests(bench.metrics_url)
                counted.subtract(before)
            slug = tool.replace(" ", "-")
            _write_log(bench.work / f"requests-{slug}-{workload}.log", log)
            if +counted != made:  # its metrics and the proxy should agree
                results.notes[f"{workload} {tool}"] = \
                    f"metrics counted {dict(+counted)}, the proxy saw {dict(made)}"


def _write_log(path: Path, log: list[tuple[str, str, str, int]]) -> None:
    path.write_text("".join(f"{method} {name} {comp} {status}\n"
                            for method, name, comp, status in log))


def git_clone(bench, results) -> None:
    """`git clone` (by git's pack protocol, as from a server) onto the mount."""
    data = real_data(bench)

    def clone(root: Path, name: str) -> None:
        (root / "git").mkdir(exist_ok=True)
        _quiet("git", "clone", "--quiet", "--no-local", str(data.repository),
               str(root / "git" / name), env=_git_env())

    measure(bench, results, "git_clone", clone, writes=True)
    commits = subprocess.run(["git", "-C", str(data.repository), "rev-list", "--count", "HEAD"],
                             check=True, capture_output=True, text=True).stdout.strip()
    results.notes["git_clone"] = f"{data.described}: {commits} commits"


def untar(bench, results) -> None:
    """`tar x` of the package tarball into a new folder on the mount."""
    data = real_data(bench)

    def extract(root: Path, name: str) -> None:
        target = root / "untar" / name
        target.mkdir(parents=True)
        _quiet("tar", "-C", str(target), "-xf", str(data.tarball))

    measure(bench, results, "tar_x", extract, writes=True)
    results.notes["tar_x"] = f"{len(data.files)} files of {', '.join(bench.scale.packages)}"


def ls_tree(bench, results) -> None:
    """`ls -lR` of the package tree, cold (fresh mount, empty cache)."""
    data = real_data(bench)

    def ls(root: Path, name: str) -> None:
        _quiet("ls", "-lR", str(root / TREE))

    measure(bench, results, "ls_lR", ls, writes=False)
    results.notes["ls_lR"] = f"{len(data.files)} files"


def import_package(bench, results) -> None:
    """`python -S -c 'import ...'` with the package tree first on sys.path (and no
    site-packages), cold; it checks that the modules came from the mount."""
    data = real_data(bench)
    first = data.imports.split(",")[0].strip()
    code = (f"import sys, {data.imports}; "
            f"assert {first}.__file__.startswith(sys.argv[1]), {first}.__file__")

    def load(root: Path, name: str) -> None:
        tree = str(root / TREE)
        _quiet(sys.executable, "-S", "-c", code, tree, cwd=bench.work,
               env={**os.environ, "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"})

    measure(bench, results, "import", load, writes=False)
    results.notes["import"] = f"import {data.imports}"


WORKLOADS = {"git_clone": git_clone, "untar": untar, "ls_tree": ls_tree,
             "import_package": import_package}
