"""The mount(8) helper's argument and option mapping, the mount-table parsing of
`status` without a mount point, and the SAS command's expiry (no FUSE needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from blobmount import helper, inventory
from blobmount.cli import _expiry, cli
from blobmount.errors import BlobmountError
from blobmount.helper import HelperUsage, is_helper_call, mount_arguments

COMMANDS = set(cli.commands)


def test_mount_8_call_with_fstab_options(tmp_path):
    command, fake = mount_arguments([
        "/etc/blobmount/datasets.yaml", "/mnt/datasets", "-o",
        "rw,_netdev,noauto,x-systemd.automount,x-systemd.idle-timeout=60,defaults,nofail,"
        "allow_other,ro,blobmount.user=alice,blobmount.log=/var/log/bm.log,comment=x",
    ])
    assert not fake
    assert command == ["mount", "/mnt/datasets", "--config", "/etc/blobmount/datasets.yaml",
                       "-o", "allow_other,ro", "--user", "alice",
                       "--log-file", "/var/log/bm.log"]


def test_mount_fuse_call_drops_what_it_adds():
    # fuse3's mount.fuse adds dev,suid; mount -v passes -v.
    command, _ = mount_arguments(["blobmount#/etc/b.yaml", "/mnt/b", "-o", "rw,dev,suid",
                                  "-v", "-t", "fuse.blobmount"])
    assert command == ["mount", "/mnt/b", "--config", "/etc/b.yaml", "-v"]


def test_default_config_and_glued_option_forms():
    command, fake = mount_arguments(["none", "/mnt/x", "-onoexec,blobmount.verbose", "-sfn",
                                     "-tfuse.blobmount"])
    assert command == ["mount", "/mnt/x", "-o", "noexec", "-v"]
    assert fake


def test_sloppy_ignores_unknown_options_and_strict_refuses_them():
    with pytest.raises(HelperUsage, match="unknown mount option 'max_read=65536'"):
        mount_arguments(["c.yaml", "/mnt/x", "-o", "max_read=65536"])
    command, _ = mount_arguments(["c.yaml", "/mnt/x", "-s", "-o", "max_read=65536"])
    assert "-o" not in command


@pytest.mark.parametrize("args, problem", [
    (["only-one"], "usage"),
    (["a", "b", "c"], "usage"),
    (["a", "b", "-o"], "-o needs a value"),
    (["a", "b", "-t", "ext4"], "not blobmount's"),
    (["a", "b", "-N", "/proc/1/ns/mnt"], "namespace"),
    (["a", "b", "--weird"], "unknown argument"),
])
def test_wrong_use(args, problem):
    with pytest.raises(HelperUsage, match=problem):
        mount_arguments(args)


def test_run_exit_codes(capsys):
    def failing(_command):
        raise BlobmountError("mount point /mnt/x does not exist")

    assert helper.run(["c.yaml", "/mnt/x"], failing) == helper.EXIT_FAILURE
    assert capsys.readouterr().err == "blobmount: mount point /mnt/x does not exist\n"
    assert helper.run(["c.yaml"], failing) == helper.EXIT_USAGE
    seen = []
    assert helper.run(["c.yaml", "/mnt/x", "-f"], seen.append) == 0 and seen == []
    assert helper.run(["c.yaml", "/mnt/x"], seen.append) == 0 and len(seen) == 1


def test_who_is_a_helper_call(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("mounts: []\n")
    folder = tmp_path / "mnt"
    folder.mkdir()
    assert is_helper_call(["/sbin/mount.fuse.blobmount", "x", "y"], COMMANDS)
    assert is_helper_call(["blobmount", str(config), str(folder), "-o", "rw"], COMMANDS)
    assert is_helper_call(["blobmount", f"blobmount#{config}", str(folder)], COMMANDS)
    assert is_helper_call(["blobmount", "none", str(folder)], COMMANDS)
    assert not is_helper_call(["blobmount", "mount", str(folder)], COMMANDS)
    assert not is_helper_call(["blobmount", "status"], COMMANDS)
    assert not is_helper_call(["blobmount", str(config), str(tmp_path / "absent")], COMMANDS)
    assert not is_helper_call(["blobmount", "moutn", str(folder)], COMMANDS)  # a typo


def test_mount_table_parsing(tmp_path):
    table = tmp_path / "mounts"
    table.write_text(
        "sysfs /sys sysfs rw,nosuid 0 0\n"
        "blobmount /mnt/with\\040space fuse.blobmount rw,nosuid,nodev,relatime,user_id=0,"
        "group_id=0,default_permissions 0 0\n"
        "sshfs /mnt/ssh fuse.sshfs rw,user_id=0 0 0\n"
        "blobmount /home/al/d fuse.blobmount ro,user_id=1000,group_id=1000 0 0\n")
    found = inventory.blobmount_mounts(str(table))
    assert [record.mountpoint for record in found] == ["/mnt/with space", "/home/al/d"]
    assert [record.uid for record in found] == [0, 1000]


def test_describe_lines():
    live = inventory.MountRecord("/mnt/a", {}, inventory.LIVE, status={
        "pid": 7, "config": "/etc/blobmount/a.yaml",
        "mounts": [{"local": "data"}], "uploads": {"count": 2, "failed": [{}]}})
    assert inventory.describe(live) == ("/mnt/a: live: daemon pid 7, config"
                                        " /etc/blobmount/a.yaml, 1 entry (data/),"
                                        " 2 pending uploads (1 failing)")
    dead = inventory.MountRecord("/mnt/b", {}, inventory.DEAD, "its daemon is gone")
    assert inventory.describe(dead) == "/mnt/b: dead: its daemon is gone"


def test_expiry_forms():
    now = dt.datetime.now(dt.UTC)
    assert abs((_expiry("1h") - now).total_seconds() - 3600) < 5
    assert abs((_expiry("7d") - now).total_seconds() - 7 * 86400) < 5
    assert _expiry("2999-01-02T03:04Z") == dt.datetime(2999, 1, 2, 3, 4, tzinfo=dt.UTC)
    assert _expiry("2999-01-02") == dt.datetime(2999, 1, 2, tzinfo=dt.UTC)
    with pytest.raises(BlobmountError, match="give a lifetime"):
        _expiry("soon")
    with pytest.raises(BlobmountError, match="not in the future"):
        _expiry("2001-01-01")
