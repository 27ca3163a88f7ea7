"""uid, gid and umask: read from the config and from -o (which wins), checked with
one-line errors, and shown by the file system as owners and modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from blobmount.cli import _mount_options
from blobmount.config import Settings, load_config, locate, parse_umask, setting_option
from blobmount.errors import BlobmountError, ConfigError
from blobmount.fs import BlobFS
from blobmount.helper import HelperUsage, mount_arguments
from blobmount.store import Node

KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
MOUNTS = f"""\
cache_dir: /tmp/unused-cache
accounts:
  main: {{account_name: myaccount, account_key: "{KEY}"}}
mounts:
  - {{local: data, account: main, container: research}}
"""


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(locate, "_SYSTEM_CACHE", tmp_path / "var-cache")


def settings(tmp_path: Path, top: str) -> Settings:
    """The settings of a native config whose top-level keys include `top` (YAML text)."""
    path = tmp_path / "config.yaml"
    path.write_text(top + MOUNTS)
    return load_config(path).settings


def test_defaults_are_the_daemon_s_own_user_and_umask_022(tmp_path: Path) -> None:
    loaded = settings(tmp_path, "")
    assert (loaded.uid, loaded.gid, loaded.umask) == (None, None, 0o022)


@pytest.mark.parametrize(("text", "umask"), [
    ('umask: "022"', 0o022),
    ('umask: "0027"', 0o027),
    ('umask: "0o077"', 0o077),
    ("umask: 0027", 0o027),  # YAML reads a leading 0 as octal
    ("umask: 0", 0),
    ('umask: "777"', 0o777),
])  # fmt: skip
def test_umask_forms(tmp_path: Path, text: str, umask: int) -> None:
    assert settings(tmp_path, text + "\n").umask == umask


def test_uid_and_gid(tmp_path: Path) -> None:
    loaded = settings(tmp_path, 'uid: 1234\ngid: "2345"\n')
    assert (loaded.uid, loaded.gid) == (1234, 2345)
    assert settings(tmp_path, "uid: 0\ngid: 0\n").uid == 0


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('umask: "8"', "umask", "expected octal digits such as 022 or 0027, got '8'"),
    ('umask: "0o29"', "umask", "expected octal digits"),
    ('umask: "u=rwx"', "umask", "expected octal digits"),
    ('umask: "1777"', "umask", "must be from 0 to 0777 (octal), got 0o1777"),
    ("umask: 512", "umask", "must be from 0 to 0777 (octal), got 0o1000"),
    ("umask: -1", "umask", "must be from 0 to 0777 (octal)"),
    ("umask: true", "umask", "got a boolean"),
    ("umask: 2.5", "umask", "got a number"),
    ("uid: -1", "uid", "expected a user or group id (0 to 4294967294), got -1"),
    ("uid: 4294967295", "uid", "got 4294967295"),
    ("uid: alice", "uid", "got 'alice'"),
    ("gid: yes", "gid", "got a boolean"),
    ("gid: [1]", "gid", "got a list"),
])  # fmt: skip
def test_bad_values_are_one_line_naming_the_key(tmp_path: Path, text: str, key: str,
                                                 problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, text + "\n")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'config.yaml'}: {key}: ")
    assert problem in message


def test_azfuse_format_has_no_such_keys_so_the_defaults_apply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # azfuse's files hold no settings: its users set these with -o.
    (tmp_path / "accounts").mkdir()
    (tmp_path / "accounts" / "acct.yaml").write_text(
        f"account_name: myaccount\naccount_key: {KEY}\ncontainer_name: research\n")
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(tmp_path / "accounts"))
    path = tmp_path / "azfuse.yaml"
    path.write_text(f"- {{local: data, storage_account: acct, cache: {tmp_path}/c}}\n")
    loaded = load_config(path)
    assert (loaded.settings.uid, loaded.settings.umask) == (None, 0o022)
    changed = loaded.with_settings(uid=7, umask=0o077)
    assert (changed.settings.uid, changed.settings.umask) == (7, 0o077)
    assert changed.mounts == loaded.mounts and loaded.settings.uid is None


# --------------------------------------------------------------------------- -o options


def test_mount_options_split_kernel_options_from_settings() -> None:
    kernel, overrides = _mount_options(("allow_other, uid=1000", "umask=0027,ro,gid=100",
                                        "allow_other,umask=077"))
    assert kernel == ["allow_other", "ro"]
    # umask is octal on the command line, as mount(8) and libfuse read it; the last wins.
    assert overrides == {"uid": 1000, "gid": 100, "umask": 0o077}
    assert _mount_options(()) == ([], {})


@pytest.mark.parametrize(("given", "problem"), [
    ("umask=999", "mount option 'umask=999': expected octal digits"),
    ("umask=1777", "mount option 'umask=1777': must be from 0 to 0777 (octal)"),
    ("uid=alice", "mount option 'uid=alice': expected a user or group id"),
    ("gid=-5", "mount option 'gid=-5': expected a user or group id"),
    ("uid", "mount option 'uid': needs a value, such as uid=1000"),
    ("umask=", "mount option 'umask=': expected octal digits"),
    ("fmask=022", "unknown mount option 'fmask=022'; blobmount takes allow_other"),
])  # fmt: skip
def test_bad_mount_options(given: str, problem: str) -> None:
    with pytest.raises(BlobmountError) as info:
        _mount_options((given,))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(problem)


def test_setting_option_ignores_other_options() -> None:
    assert setting_option("allow_other") is None
    assert setting_option("blobmount.user=uid") is None
    assert setting_option("gid=0") == ("gid", 0)
    assert parse_umask("0o22") == parse_umask(0o22) == 0o22


def test_fstab_helper_passes_settings_on_and_refuses_bad_ones_even_when_sloppy() -> None:
    command, _ = mount_arguments(["/etc/b.yaml", "/mnt/b", "-o",
                                  "defaults,allow_other,uid=1000,gid=1000,umask=027"])
    assert command == ["mount", "/mnt/b", "--config", "/etc/b.yaml",
                       "-o", "allow_other,uid=1000,gid=1000,umask=027"]
    # A mistyped owner must not mount with everything readable instead.
    with pytest.raises(HelperUsage, match="mount option 'umask=88': expected octal"):
        mount_arguments(["/etc/b.yaml", "/mnt/b", "-s", "-o", "umask=88"])


# --------------------------------------------------------------------------- attributes


class _Entry:
    def __init__(self, read_only: bool) -> None:
        self.read_only = read_only


def _node(inode: int, *, is_dir: bool, entry: int | None) -> Node:
    return Node(inode=inode, parent=1, name="x", is_dir=is_dir, entry_index=entry, blob="x",
                size=3, mtime_ns=0, etag=None, checked=None, listed=None, unuploaded=False)


def _fs(entries: list[_Entry], **owners: int) -> BlobFS:
    # Attributes.of needs only the entries; the rest stays unused here.
    return BlobFS(SimpleNamespace(store=None), None, entries, attr_timeout=1.0,
                  **owners)


def _shown(fs: BlobFS, node: Node) -> tuple[int, int, int, int]:
    attrs = fs.attrs.of(node)
    return stat.S_IFMT(attrs.st_mode), stat.S_IMODE(attrs.st_mode), attrs.st_uid, attrs.st_gid


@pytest.mark.parametrize(("umask", "file", "folder", "ro_file", "ro_folder"), [
    (0o022, 0o644, 0o755, 0o444, 0o555),
    (0o027, 0o640, 0o750, 0o440, 0o550),
    (0o077, 0o600, 0o700, 0o400, 0o500),
    (0o000, 0o666, 0o777, 0o444, 0o555),
])  # fmt: skip
def test_modes_follow_the_umask(umask: int, file: int, folder: int, ro_file: int,
                                ro_folder: int) -> None:
    fs = _fs([_Entry(False), _Entry(True)], uid=1234, gid=2345, umask=umask)
    assert _shown(fs, _node(2, is_dir=False, entry=0)) == (stat.S_IFREG, file, 1234, 2345)
    assert _shown(fs, _node(3, is_dir=True, entry=0)) == (stat.S_IFDIR, folder, 1234, 2345)
    assert _shown(fs, _node(4, is_dir=False, entry=1)) == (stat.S_IFREG, ro_file, 1234, 2345)
    assert _shown(fs, _node(5, is_dir=True, entry=1)) == (stat.S_IFDIR, ro_folder, 1234, 2345)
    # The mount table's own folders belong to no entry and never change.
    assert _shown(fs, _node(1, is_dir=True, entry=None))[1] == ro_folder


def test_default_owner_is_the_daemon_s_user() -> None:
    fs = _fs([_Entry(False)])
    assert _shown(fs, _node(2, is_dir=False, entry=0)) == (
        stat.S_IFREG, 0o644, os.getuid(), os.getgid())
