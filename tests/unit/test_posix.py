"""posix.py: the metadata that keeps modes and owners (rclone's names), and the rules
for what new files get and who may chown."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from blobmount.azure import parse_listing
from blobmount.errors import NotPermitted
from blobmount.posix import (
    FIXED,
    KEPT,
    UNCHANGED,
    Caller,
    Kept,
    Permissions,
    from_metadata,
    to_metadata,
)

ROOT = Caller(uid=0, gid=0)
USER = Caller(uid=1000, gid=1000, pid=os.getpid())


def test_metadata_in_rclone_s_format_both_ways() -> None:
    assert to_metadata(is_dir=False, mode=0o640, uid=5, gid=6) == {
        "mode": "100640", "uid": "5", "gid": "6"}
    assert to_metadata(is_dir=True, mode=0o1777, uid=None, gid=None) == {"mode": "41777"}
    assert from_metadata({"Mode": "100640", "UID": "5", "gid": "6"}) == Kept(0o640, 5, 6)
    assert from_metadata({"mode": "40755"}).mode == 0o755
    assert from_metadata({"is_symlink": "True"}).is_link


def test_fifos_sockets_and_devices_keep_their_type_in_mode_and_devices_rdev() -> None:
    assert to_metadata(is_dir=False, mode=0o644, uid=None, gid=None,
                       special=stat.S_IFIFO) == {"mode": "10644"}
    assert from_metadata({"mode": "10644"}) == Kept(0o644, special=stat.S_IFIFO)
    assert from_metadata({"mode": "140755"}).special == stat.S_IFSOCK
    device = from_metadata({"mode": "20600", "rdev": "103"})
    assert (device.special, device.rdev, device.mode) == (stat.S_IFCHR, 0x103, 0o600)
    # A regular file's or folder's mode is no special node, and says no rdev.
    assert from_metadata({"mode": "100644", "rdev": "103"}) == Kept(0o644)
    assert from_metadata({"mode": "60600", "rdev": "zz"}).rdev == 0
    rules = Permissions(mode=KEPT, uid=1, gid=2, umask=0o022)
    assert rules.shown(is_dir=False, is_link=False, mode=0o640, uid=None, gid=None,
                       writable=True, special=stat.S_IFBLK) == (stat.S_IFBLK | 0o640, 1, 2)


@pytest.mark.parametrize("bad", [{"mode": "rw-r--r--"}, {"mode": "9"}, {"uid": "-1"},
                                 {"uid": "99999999999"}, {"gid": ""}])
def test_bad_values_count_as_absent(bad: dict[str, str]) -> None:
    assert from_metadata(bad) == Kept()


def test_what_shows_kept_or_fixed() -> None:
    kept = Permissions(mode=KEPT, uid=1, gid=2, umask=0o022)
    fixed = Permissions(mode=FIXED, uid=1, gid=2, umask=0o022)
    file = {"is_dir": False, "is_link": False, "mode": 0o4750, "uid": 7, "gid": 8}
    assert kept.shown(**file, writable=True) == (stat.S_IFREG | 0o4750, 7, 8)
    assert kept.shown(**file, writable=False) == (stat.S_IFREG | 0o4550, 7, 8)
    assert fixed.shown(**file, writable=True) == (stat.S_IFREG | 0o644, 1, 2)
    none = {**file, "mode": None, "uid": None, "gid": None}
    assert kept.shown(**none, writable=True) == (stat.S_IFREG | 0o644, 1, 2)
    link = {**file, "is_link": True}
    assert kept.shown(**link, writable=False) == (stat.S_IFLNK | 0o777, 7, 8)


def test_new_files_get_the_caller_s_owner_and_mode_less_its_umask() -> None:
    rules = Permissions(mode=KEPT, uid=1, gid=2, umask=0o022)
    caller = Caller(uid=1000, gid=1001, umask=0o027)
    assert rules.new(caller, 0o666, parent_mode=0o755, parent_gid=5, is_dir=False) == Kept(
        0o640, 1000, 1001)
    # A set-group-ID folder gives its group, and its set-group-ID bit to new folders.
    assert rules.new(caller, 0o777, parent_mode=0o2775, parent_gid=5, is_dir=True) == Kept(
        0o2750, 1000, 5)
    assert rules.new(caller, 0o666, parent_mode=0o2775, parent_gid=5, is_dir=False) == Kept(
        0o640, 1000, 5)
    fixed = Permissions(mode=FIXED, uid=1, gid=2, umask=0o022)
    assert fixed.new(caller, 0o666, parent_mode=0o755, parent_gid=5, is_dir=False) == Kept()


def test_chown_root_gives_anything_others_only_their_own_to_their_groups() -> None:
    check = Permissions.check_chown
    check(ROOT, owner=5, uid=6, gid=7, current_gid=5)
    check(USER, owner=1000, uid=UNCHANGED, gid=1000, current_gid=0)  # to its own group
    check(USER, owner=1000, uid=1000, gid=UNCHANGED, current_gid=0)  # to itself
    check(USER, owner=5, uid=UNCHANGED, gid=UNCHANGED, current_gid=5)  # nothing changes
    refusals = [
        {"owner": 1000, "uid": 0, "gid": UNCHANGED, "current_gid": 1000},  # to another user
        {"owner": 1000, "uid": UNCHANGED, "gid": 4242, "current_gid": 1000},  # not its group
        {"owner": 5, "uid": UNCHANGED, "gid": 1000, "current_gid": 5},  # not its file
    ]
    for refused in refusals:
        with pytest.raises(NotPermitted) as caught:
            check(USER, **refused)
        assert caught.value.errno == errno.EPERM


LISTING = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults><Blobs>
<Blob><Name>f</Name><Properties><Last-Modified>Tue, 01 Dec 2026 09:00:00 GMT</Last-Modified>
<Etag>0x1</Etag><Content-Length>3</Content-Length></Properties>
<Metadata><Mode>100600</Mode><uid>7</uid><gid>8</gid>
<atime>2026-01-01T00:00:01.5Z</atime></Metadata></Blob>
<Blob><Name>l</Name><Properties><Last-Modified>Tue, 01 Dec 2026 09:00:00 GMT</Last-Modified>
<Etag>0x2</Etag><Content-Length>6</Content-Length></Properties>
<Metadata><is_symlink>true</is_symlink></Metadata></Blob>
<Blob><Name>d</Name><Properties><Last-Modified>Tue, 01 Dec 2026 09:00:00 GMT</Last-Modified>
<Etag>0x3</Etag><Content-Length>0</Content-Length></Properties>
<Metadata><hdi_isfolder>true</hdi_isfolder><mode>41777</mode></Metadata></Blob>
</Blobs><NextMarker/></EnumerationResults>"""


def test_a_listing_reads_modes_owners_atime_and_links() -> None:
    items, marker = parse_listing(LISTING)
    f, link, folder = items
    assert (f.mode, f.uid, f.gid, f.is_link) == (0o600, 7, 8, False)
    assert f.atime_ns == 1_767_225_601_500_000_000
    assert f.ctime_ns == f.mtime_ns > 0  # no mtime metadata: both Last-Modified
    assert link.is_link and link.size == 6
    assert (folder.name, folder.is_dir, folder.mode) == ("d/", True, 0o1777)
    assert marker == ""


def test_chmod_and_chown_keep_mode_and_owner_together() -> None:
    rules = Permissions(mode=KEPT, uid=1, gid=2, umask=0o022)
    shown = (stat.S_IFREG | 0o644, 1, 2)
    assert rules.changes(ROOT, shown=shown, mode=stat.S_IFREG | 0o600, uid=None,
                         gid=None) == {"mode": 0o600}
    assert rules.changes(ROOT, shown=shown, mode=None, uid=5, gid=None) == {
        "uid": 5, "gid": 2, "mode": 0o644}
    link = (stat.S_IFLNK | 0o777, 1, 2)
    assert rules.changes(ROOT, shown=link, mode=None, uid=5, gid=6) == {"uid": 5, "gid": 6}
    fixed = Permissions(mode=FIXED, uid=1, gid=2, umask=0o022)
    assert fixed.changes(ROOT, shown=shown, mode=0o600, uid=5, gid=6) == {}
    with pytest.raises(NotPermitted):
        rules.changes(USER, shown=(stat.S_IFREG | 0o644, 1000, 1000), mode=None, uid=0,
                      gid=None)
