"""`--json` on the commands that print for people: mount, prefetch, sync, cache evict,
cache clear, mount --list; each parsed as JSON and checked against the mount and the
container."""

from __future__ import annotations

import json

import pytest

from .conftest import Mount, blobmount, pid_alive, upload, wait_for

pytestmark = pytest.mark.integration


def as_json(*args: str, code: int = 0):
    result = blobmount(*args, "--json")
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_json_of_a_live_mount(mounter, container):
    upload(container, {"a.txt": b"alpha", "b.txt": b"beta" * 10})
    # Async uploads wait a minute before going: a closed file stays pending until sync.
    config = mounter.config([{"local": "d", "container": container.container_name,
                              "upload": "async"}], upload_batch_window=60,
                            read_ahead_files=0)
    mountpoint = mounter.tmp_path / "mnt"
    mountpoint.mkdir()
    log_file = mounter.tmp_path / "blobmount.log"
    mounted = as_json("mount", str(mountpoint), "--config", str(config), "--log-file",
                      str(log_file))
    mount = Mount(mountpoint, config, log_file, mounted["pid"])
    mounter.live.append(mount)
    try:
        assert mounted["mountpoint"] == str(mountpoint)
        assert mounted["note"] == f"mounted 1 entry on {mountpoint}"
        assert mount.status()["pid"] == mounted["pid"]
        listed = as_json("mount", "--list")
        assert [m["state"] for m in listed if m["mountpoint"] == str(mountpoint)] == ["live"]

        [prefetched] = as_json("prefetch", str(mount.path("d")))
        assert prefetched["mountpoint"] == str(mountpoint)
        assert (prefetched["files"], prefetched["downloaded"], prefetched["failed"]) == (2, 2, [])
        assert mount.status()["downloads"]["total"] == 2

        mount.path("d/pending.txt").write_bytes(b"closed, not uploaded")
        assert not container.get_blob_client("pending.txt").exists()
        assert as_json("sync", str(mountpoint)) == {"failed": []}
        assert container.download_blob("pending.txt").readall() == b"closed, not uploaded"

        [evicted] = as_json("cache", "evict", str(mount.path("d/a.txt")))
        assert [item["path"] for item in evicted["evicted"]] == ["d/a.txt"]
        assert (evicted["refused"], evicted["bytes"]) == ([], 5)

        with open(mount.path("d/open.txt"), "wb") as writer:
            writer.write(b"still being written")
            writer.flush()
            result = blobmount("cache", "clear", str(mountpoint), "--json")
            assert result.returncode == 1  # the open file stays
            assert "kept d/open.txt: open for writing" in result.stderr
            cleared = json.loads(result.stdout)
            assert [item["path"] for item in cleared["refused"]] == ["d/open.txt"]
            assert sorted(item["path"] for item in cleared["evicted"]) == [
                "d/b.txt", "d/pending.txt"]
        left = json.loads(blobmount("cache", "ls", str(mountpoint), "--json",
                                    check=True).stdout)
        assert [item["path"] for item in left] == ["d/open.txt"]

        unmounted = blobmount("unmount", str(mountpoint))
        assert (unmounted.returncode, unmounted.stdout) == (0, "")
        wait_for(lambda: not pid_alive(mount.pid), timeout=30, what="the daemon to exit")
        mounter.live.remove(mount)
    except BaseException:
        mounter.cleanup()
        raise
