"""A user who is not root: allow_other refused in one line unless /etc/fuse.conf lets
users give it (fusermount3's own rule, which it states only in the daemon's log), and the
embedded default's folders in the user's own XDG folders."""

from __future__ import annotations

import os

import pytest

from blobmount.daemon import check_allow_other
from blobmount.errors import MountPointError


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


@pytest.mark.parametrize("text", ["", "#user_allow_other\n", "mount_max = 1000\n",
                                  "user_allow_other_too\n", "# user_allow_other\n"])
def test_refused_unless_fuse_conf_allows(not_root, tmp_path, text):
    conf = tmp_path / "fuse.conf"
    conf.write_text(text)
    with pytest.raises(MountPointError) as refused:
        check_allow_other(["ro", "allow_other"], conf)
    message = str(refused.value)
    assert "\n" not in message
    assert "allow_other" in message and "user_allow_other" in message and str(conf) in message


@pytest.mark.parametrize("text", ["user_allow_other\n", "  user_allow_other  # yes\n",
                                  "mount_max = 9\nuser_allow_other"])
def test_allowed_when_fuse_conf_says_so(not_root, tmp_path, text):
    conf = tmp_path / "fuse.conf"
    conf.write_text(text)
    check_allow_other(["allow_other"], conf)


def test_root_and_mounts_without_allow_other_are_not_checked(tmp_path, monkeypatch):
    missing = tmp_path / "no-fuse.conf"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    check_allow_other(["allow_other"], missing)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    check_allow_other(["ro"], missing)
    # Unreadable or missing: fusermount3 (setuid root) reads it and decides.
    check_allow_other(["allow_other"], missing)


def test_a_users_folders_follow_xdg_and_ignore_relative_values(tmp_path, monkeypatch):
    from blobmount.daemon import data_dir, embedded_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the spec says
    assert data_dir() == tmp_path / "data/blobmount"
    assert embedded_cache_dir() == tmp_path / "home/.cache/blobmount"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert data_dir() == tmp_path / "home/.local/share/blobmount"
