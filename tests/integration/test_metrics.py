"""The Prometheus endpoint and `status`'s request counts, scraped from a real mount after
a known workload: what each step costs in requests to the account is exact."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blobmount.azure import Remote
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY, Account
from blobmount.metrics import Metrics

from .conftest import blobmount, is_mounted, upload

pytestmark = pytest.mark.integration


def scrape(url: str) -> Counter:
    """Every sample of the endpoint, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return Counter({(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples})


def requests(samples: Counter) -> Counter:
    """Requests to the account by (op, status)."""
    return Counter({(dict(labels)["op"], dict(labels)["status"]): value
                    for (name, labels), value in samples.items()
                    if name == "blobmount_remote_requests_total" and value})


def value(samples: Counter, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Steps:
    """Scrapes around each step of a workload: what the step alone cost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.last = scrape(url)

    def step(self) -> tuple[Counter, Counter]:
        """(requests the step made, every sample's change)."""
        now = scrape(self.url)
        changed = Counter(now)
        changed.subtract(self.last)
        made = requests(now)
        made.subtract(requests(self.last))
        self.last = now
        return +made, changed


def test_a_known_workload_costs_known_requests(mounter, container):
    upload(container, {"data/small.txt": b"hello", "data/sub/inner.txt": b"inside"})
    # A long TTL: no listing expires during the test, however slow the machine.
    config = mounter.config([{"local": "e", "container": container.container_name}],
                            listing_ttl=3600, metrics_address="127.0.0.1:0")
    with mounter.mounted(config) as mount:
        url = mount.status()["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        steps = Steps(url)
        folder = mount.path("e/data")

        # Listing a folder: the entry's top (to find `data`), a level at a time, then
        # `data/` with all it holds: `data/sub/` came by the same request.
        assert sorted(os.listdir(folder)) == ["small.txt", "sub"]
        assert os.listdir(folder / "sub") == ["inner.txt"]
        made, changed = steps.step()
        assert made == {("list", "200"): 2}
        assert value(changed, "blobmount_fuse_requests_total", op="readdir") >= 1

        # A name that does not exist, in a folder listed within the TTL: no request.
        assert not (folder / "nope").exists()
        made, changed = steps.step()
        assert made == {}
        assert value(changed, "blobmount_fuse_errors_total", op="lookup", errno="ENOENT") == 1

        # A cold small file: one GET, its bytes down, a miss.
        assert (folder / "small.txt").read_bytes() == b"hello"
        made, changed = steps.step()
        assert made == {("get", "200"): 1}
        assert value(changed, "blobmount_remote_bytes_total", direction="down") == 5
        assert value(changed, "blobmount_cache_misses_total") == 1
        assert value(changed, "blobmount_cache_hits_total") == 0
        assert value(changed, "blobmount_fuse_requests_total", op="open") == 1

        # The same file again: served by the cached copy, no request.
        assert (folder / "small.txt").read_bytes() == b"hello"
        made, changed = steps.step()
        assert made == {}
        assert value(changed, "blobmount_cache_hits_total") == 1
        assert value(changed, "blobmount_fuse_requests_total", op="open") == 1

        # A new small file (upload: sync): one PUT, before close() returns.
        (folder / "new.txt").write_bytes(b"written")
        made, changed = steps.step()
        assert made == {("put", "201"): 1}
        assert value(changed, "blobmount_remote_bytes_total", direction="up") == 7
        assert value(changed, "blobmount_fuse_requests_total", op="create") == 1
        # close() waits for the flush; the kernel sends the release after it returns.
        assert value(changed, "blobmount_fuse_requests_total", op="flush") == 1
        assert container.download_blob("data/new.txt").readall() == b"written"

        # What the store knows, read at the scrape.
        last = steps.last
        assert value(last, "blobmount_cache_bytes", entry="e") == len(b"hello" + b"written")
        assert value(last, "blobmount_uploads_pending", entry="e") == 0
        assert value(last, "blobmount_uploads_failed", entry="e") == 0
        assert value(last, "blobmount_conflicts_total") == 0
        assert value(last, "blobmount_fuse_request_seconds_count", op="open") == 2

        # `status` shows the same counts, by op, without Prometheus.
        status = mount.status()["requests"]
        by_op = Counter()
        for (op, _), count in requests(scrape(url)).items():
            by_op[op] += count
        assert status["by_op"] == by_op and status["total"] == sum(by_op.values())
        assert status["by_op"]["get"] == 1 and status["by_op"]["put"] == 1
        shown = blobmount("status", str(mount.mountpoint), check=True).stdout
        assert f"requests to the account: {status['total']} (" in shown
        assert f"metrics: {url}" in shown


def test_the_names_git_looks_for_and_does_not_find_cost_no_request(mounter, container):
    """A clone or `git status` looks up many names that are not there (lock files,
    packed-refs, shallow, alternates, ...): in a folder listed within the TTL, or made
    through the mount, none of those lookups costs a request."""
    upload(container, {"repo/.git/HEAD": b"ref: refs/heads/main\n",
                       "repo/.git/config": b"[core]\n",
                       "repo/.git/objects/pack/pack-1.pack": b"PACK"})
    config = mounter.config([{"local": "e", "container": container.container_name}],
                            listing_ttl=3600, metrics_address="127.0.0.1:0")
    with mounter.mounted(config) as mount:
        steps = Steps(mount.status()["metrics"])
        git = mount.path("e/repo/.git")
        assert sorted(os.listdir(git)) == ["HEAD", "config", "objects"]
        assert os.listdir(git / "objects") == ["pack"]
        assert os.listdir(git / "objects" / "pack") == ["pack-1.pack"]
        made, _ = steps.step()
        assert set(made) == {("list", "200")}  # only listings, to get here

        misses = ["config.lock", "HEAD.lock", "packed-refs", "shallow", "commondir",
                  "index", "FETCH_HEAD", "objects/info/alternates", "objects/pack/pack-1.keep",
                  "objects/pack/pack-1.idx", "objects/pack/tmp_pack_a1b2c3"]
        for name in misses:
            assert not (git / name).exists(), name
        made, changed = steps.step()
        assert made == {}
        assert value(changed, "blobmount_fuse_errors_total", op="lookup",
                     errno="ENOENT") == len(misses)

        # A folder made through the mount (a clone's .git/refs/heads) is known empty.
        (git / "refs").mkdir()
        steps.step()
        for name in ("heads", "tags", "HEAD.lock", "remotes"):
            assert not (git / "refs" / name).exists(), name
        made, _ = steps.step()
        assert made == {}


def test_an_azcopy_download_counts_as_a_job(mounter, container):
    upload(container, {"big.bin": b"x" * 2048})
    config = mounter.config([{"local": "e", "container": container.container_name}],
                            listing_ttl=3600, sdk_download_max=1024,
                            metrics_address="127.0.0.1:0")
    with mounter.mounted(config) as mount:
        steps = Steps(mount.status()["metrics"])
        assert os.listdir(mount.path("e")) == ["big.bin"]
        steps.step()
        assert mount.path("e/big.bin").read_bytes() == b"x" * 2048
        made, changed = steps.step()
        assert value(changed, "blobmount_azcopy_jobs_total", kind="download") == 1
        assert value(changed, "blobmount_remote_bytes_total", direction="down") == 2048
        assert made.get(("get", "200"), 0) == 0  # the bytes came by AzCopy, not the SDK
        assert mount.status()["requests"]["azcopy_jobs"] == {"download": 1}


def test_every_sdk_request_is_named_where_it_is_sent(azurite, container, tmp_path):
    """The transport under the SDK's pipeline names each request the Remote makes."""
    account = Account(name="az", account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY,
                      endpoint=azurite.endpoint)
    metrics = Metrics()
    remote = Remote(account, container.container_name, metrics=metrics)
    source = tmp_path / "f"
    source.write_bytes(b"12345")
    try:
        remote.upload("a", source, base_etag="", md5="827ccb0eea8a706c4c34a16891f84e7b")
        remote.properties("a")
        remote.update_metadata("a", {"k": "v"})
        remote.copy("a", "b")
        remote.delete("b")
        blob = remote._client.get_blob_client("blocks")
        blob.stage_block("QUFB", b"abc")
        blob.commit_block_list(["QUFB"])
        list(remote.list_pages(""))
        with pytest.raises(Exception):  # noqa: B017 - any RemoteError will do
            remote.properties("missing")
        # Bare requests go by urllib3 alone when they succeed (lean.py): signed right,
        # names that need quoting included, each costs one request, none refused.
        assert remote._lean is not None  # an account key: signed here
        container.upload_blob("a dir/é+1.txt", b"odd")
        remote.download("a dir/é+1.txt", tmp_path / "copy")
        assert (tmp_path / "copy").read_bytes() == b"odd"
        assert [item.name for page in remote.list_pages("a dir/é+") for item in page] == [
            "a dir/é+1.txt"]
    finally:
        remote.close()
    counts = {(op, status): count for op, status_counts in _by_op_status(metrics).items()
              for status, count in status_counts.items()}
    assert counts == {
        ("put", "201"): 1, ("head", "200"): 2, ("set_metadata", "200"): 1,
        ("copy", "202"): 1, ("delete", "202"): 1, ("put_block", "201"): 1,
        ("put_block_list", "201"): 1, ("list", "200"): 2, ("head", "404"): 1,
        ("get", "206"): 1,
    }

    # No answer at all: counted as 'error', each try.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    away = Account(name="az", account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY,
                   endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    metrics = Metrics()
    remote = Remote(away, container.container_name, metrics=metrics, retries=1)
    try:
        with pytest.raises(Exception):  # noqa: B017
            remote.properties("a")
    finally:
        remote.close()
    assert _by_op_status(metrics) == {"head": {"error": 2}}


def _by_op_status(metrics: Metrics) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for family in metrics.remote_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                found.setdefault(sample.labels["op"], {})[sample.labels["status"]] = int(
                    sample.value)
    return found


def test_a_taken_metrics_port_fails_the_mount_in_one_line(mounter, container, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = mounter.config([{"local": "e", "container": container.container_name}],
                                metrics_address=f"127.0.0.1:{port}")
        mountpoint = tmp_path / "mnt"
        mountpoint.mkdir()
        checked = blobmount("check", "--config", str(config))
        result = blobmount("mount", str(mountpoint), "--config", str(config))
    # `check` says so first, among its other lines.
    assert checked.returncode == 1
    assert (f"✗ metrics_address 127.0.0.1:{port}: cannot listen there (Address already in"
            " use)") in checked.stdout.splitlines()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"blobmount: metrics_address 127.0.0.1:{port}: cannot listen there"
        " (Address already in use)"]
    assert not is_mounted(mountpoint)


def test_a_tree_comes_by_one_listing_and_a_large_one_a_level_at_a_time(mounter, container):
    """A folder's first listing asks for all it holds at any depth (up to 1,000 blobs):
    a small tree is listed whole, markers and all; past that, a level at a time."""
    from concurrent.futures import ThreadPoolExecutor

    upload(container, {"pkg/__init__.py": b"x", "pkg/sub/a.py": b"ab", "pkg/sub/b/c.py": b""})
    container.upload_blob("pkg/marked", b"", metadata={"hdi_isfolder": "true"})
    with ThreadPoolExecutor(16) as pool:  # 1,001 more under `wide/`: past one request
        list(pool.map(lambda i: container.upload_blob(f"wide/f{i:04d}", b""), range(1001)))
    config = mounter.config([{"local": "e", "container": container.container_name}],
                            listing_ttl=3600, metrics_address="127.0.0.1:0")
    with mounter.mounted(config) as mount:
        steps = Steps(mount.status()["metrics"])
        walked = {os.path.relpath(top, mount.path("e/pkg")): sorted(names + folders)
                  for top, folders, names in os.walk(mount.path("e/pkg"))}
        assert walked == {".": ["__init__.py", "marked", "sub"], "marked": [],
                          "sub": ["a.py", "b"], "sub/b": ["c.py"]}
        made, _ = steps.step()
        # The entry's top a level at a time, then `pkg` whole, by one request.
        assert made == {("list", "200"): 2}
        assert len(os.listdir(mount.path("e/wide"))) == 1001
        made, _ = steps.step()
        assert made == {("list", "200"): 2}  # its tree request, then its level
