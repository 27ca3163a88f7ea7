"""blobmount.azfuse without a mount: logical paths to mount paths, the entries' logical
folders from an azfuse config, the names `prepare` takes, and plain local files when
$AZFUSE_USE_FUSE is unset."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blobmount.azfuse import File, _flat
from blobmount.azfuse.serving import Root, Served, _roots, use_fuse
from blobmount.errors import BlobmountError


@pytest.fixture(autouse=True)
def fresh_file_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test reads the environment anew, as a new process would."""
    monkeypatch.setattr(File, "initialized", False)
    monkeypatch.setattr(File, "_served", None)


def served(roots: list[Root]) -> Served:
    return Served("/mnt/x", "/cfg.yaml", roots, client=None)  # type: ignore[arg-type]


def test_logical_paths_map_into_their_entry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    mount = served([Root(str(tmp_path / "data"), "data", "azfuse_data/"),
                    Root("/abs/models", "abs/models", "")])
    assert mount.locate("data/abc.txt") == "data/abc.txt"
    assert mount.locate(tmp_path / "data" / "sub" / "x.bin") == "data/sub/x.bin"
    assert mount.locate("data") == "data"
    assert mount.locate("./data/../data/abc.txt") == "data/abc.txt"
    assert mount.locate("/abs/models/m.bin") == "abs/models/m.bin"
    # Outside every entry (a prefix of a name is not a folder): a plain local file.
    assert mount.locate("database.txt") is None
    assert mount.locate("/abs/modelsx") is None
    assert mount.path("data/abc.txt") == "/mnt/x/data/abc.txt"
    assert mount.entry_of("abs/models/m.bin") == 1
    with pytest.raises(BlobmountError):
        mount.entry_of("elsewhere/x")


def test_roots_are_azfuse_locals_as_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "azfuse.yaml"
    config.write_text(yaml.safe_dump([
        {"local": "data", "remote": "r", "cache": "/c/1", "storage_account": "a"},
        {"local": "/abs/models", "remote": "m", "cache": "/c/2", "storage_account": "a"}]))
    status = {"config": str(config), "mounts": [
        {"local": "data", "prefix": "r/"}, {"local": "abs/models", "prefix": "m/"}]}
    assert _roots(status) == [Root(str(tmp_path / "data"), "data", "r/"),
                              Root("/abs/models", "abs/models", "m/")]
    # A native config (or the embedded default): the entries' folders, from here.
    status["config"] = "<embedded default>"
    assert [root.logical for root in _roots(status)] == [str(tmp_path / "data"),
                                                         str(tmp_path / "abs/models")]


def test_prepare_takes_names_lists_and_generators_of_lists() -> None:
    assert _flat("a") == ["a"]
    assert _flat(Path("a/b")) == ["a/b"]
    assert _flat(["a", ("b", ["c"])]) == ["a", "b", "c"]
    assert _flat([f"data/{i}.txt"] for i in range(3)) == [
        "data/0.txt", "data/1.txt", "data/2.txt"]


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("1", True),
                                                 ("2", True), (" 1 ", True)])
def test_use_fuse(monkeypatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("AZFUSE_USE_FUSE", value)
    assert use_fuse() is expected


def test_use_fuse_refuses_what_is_not_a_number(monkeypatch) -> None:
    monkeypatch.setenv("AZFUSE_USE_FUSE", "yes")
    with pytest.raises(BlobmountError, match=r"\$AZFUSE_USE_FUSE='yes': give 0 or 1"):
        use_fuse()


def test_without_fuse_files_are_local_and_a_failed_write_changes_nothing(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AZFUSE_USE_FUSE", raising=False)
    with File.open("data/abc.txt", "w") as fp:
        fp.write("abc")
    assert (tmp_path / "data" / "abc.txt").read_text() == "abc"
    with pytest.raises(RuntimeError), File.open("data/abc.txt", "w") as fp:
        fp.write("half")
        raise RuntimeError("the writer failed")
    assert (tmp_path / "data" / "abc.txt").read_text() == "abc"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["abc.txt"]
    with File.open("data/abc.txt", "rb") as fp:
        assert fp.read() == b"abc"
    assert File.isfile("data/abc.txt") and File.get_file_size("data/abc.txt") == 3
    assert File.list("data", return_info=True)[0]["size_in_bytes"] == 3
    assert File.read_byte_range("data/abc.txt", 1, 1) == b"b"
    assert File.get_cache_file("data/abc.txt") == "data/abc.txt"
    with File.async_upload(enabled=True):
        File.prepare(["data/abc.txt"])  # nothing to fetch
    File.rm("data/abc.txt")
    assert not File.isfile("data/abc.txt")
    with pytest.raises(ValueError, match="mode 'a' is not supported"):
        File.open("data/abc.txt", "a")
