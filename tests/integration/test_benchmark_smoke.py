"""The benchmark's smoke run: tiny data, a few workloads, so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_smoke_run_prints_a_table_and_writes_json(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(tmp_path)],
        # A guard against a hang, not a bound: some 3 minutes, 5 on a loaded machine.
        capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "| cold_read | blobmount cat |" in result.stdout
    assert "x sdk" in result.stdout  # a ratio to a peer was computed
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["times"]["cold_read"]["blobmount cat"][0] > 0
    assert raw["times"]["small_cold"]["blobmount"][0] > 0
    assert (tmp_path / "results.md").read_text().startswith("| workload |")
    # The peer's version and the machine, in the results and under the table.
    assert raw["rclone"] == "no rclone" or raw["rclone"].startswith("rclone v")
    assert "cores" in raw["machine"]
    assert f"{raw['rclone']}; {raw['machine']}" in result.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "results.png").stat().st_size > 0
    assert "load average" in raw["load"]

    # The real workloads, each with the requests it made to the account.
    peers = ["rclone"] if raw["rclone"] != "no rclone" else []
    tools = {"git_clone": ["blobmount sync", "blobmount async", *peers],
             "tar_x": ["blobmount sync", "blobmount async", *peers],
             "ls_lR": ["blobmount", "blobmount no read-ahead", *peers],
             "import": ["blobmount", "blobmount no read-ahead", *peers]}
    for workload, names in tools.items():
        assert sorted(raw["times"][workload]) == sorted(names), workload
        assert sorted(raw["requests"][workload]) == sorted(names), workload
        for name in names:
            assert raw["times"][workload][name][0] > 0
            assert f"| {workload} | {name} |" in result.stdout
    requests = raw["requests"]
    # Writing puts blobs, listing lists, importing gets: both tools were counted.
    for name in tools["git_clone"]:
        assert requests["git_clone"][name].get("put", 0) > 0, name
        assert requests["tar_x"][name].get("put", 0) >= 23, name  # click's 23 files
    for name in tools["ls_lR"]:
        assert requests["ls_lR"][name].get("list", 0) > 0, name
        assert requests["import"][name].get("get", 0) > 0, name
        assert set(requests["ls_lR"][name]) == {"list"}, name  # no HEAD or GET to list
    assert "Requests to the account, per run:" in result.stdout
    if peers:
        assert "x rclone" in result.stdout


@pytest.mark.slow
def test_blocks_benchmark_smoke_run(tmp_path):
    """benchmarks/blocks.py on a small blob read by blocks: each workload, its peers."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "blocks.py"), "--size", "24MiB", "--cache",
         "8MiB", "--runs", "1", "--block-read-min", "4MiB"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for row in ("| first_byte | blobmount |", "| random_4k_x100 | blobmount |",
                "| sequential | blobmount dd |", "| sequential | azcopy |"):
        assert row in result.stdout, result.stdout
    assert "x sdk ranged GET" in result.stdout
    assert "peak cache" in result.stdout and "daemon peak RSS" in result.stdout
