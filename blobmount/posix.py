"""Modes, owners and symlinks as POSIX shows them, kept as blob metadata.

The keys are rclone's (`mode` in octal with the file type bits, `uid`, `gid`, `atime`
beside `mtime`), so that `rclone --metadata` reads what blobmount writes and the
reverse; a symlink is blobfuse2's: a blob whose metadata says `is_symlink=true` and
whose content is the target. A FIFO, socket or device node is an empty blob whose
`mode` has its type bits (`10644` a FIFO, as rclone writes it), a device's number in
rclone's `rdev` (hexadecimal): blobs cannot hold what they do, only what they are, and
the kernel itself runs a FIFO's pipe once the inode says S_IFIFO. A blob without them
shows the settings' defaults.

The kernel enforces what is shown (default_permissions): who may read, write, search,
delete in sticky folders, chmod, and chown. The rules here are those it leaves to the
filesystem: what a new file gets, and (checked again, as a local filesystem does) who
may give a file to whom.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import NotPermitted

MODE_KEY = "mode"
UID_KEY = "uid"
GID_KEY = "gid"
ATIME_KEY = "atime"
SYMLINK_KEY = "is_symlink"
RDEV_KEY = "rdev"
KEYS = frozenset({MODE_KEY, UID_KEY, GID_KEY, ATIME_KEY, SYMLINK_KEY, RDEV_KEY})
#: the node types kept only as metadata (mknod): FIFOs, sockets, devices
SPECIAL_TYPES = frozenset({stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})
#: `permissions:` values: kept in metadata, or today's fixed view from the settings.
KEPT, FIXED = "kept", "fixed"
PERMISSION_MODES = (KEPT, FIXED)
#: a uid or gid of -1 in chown means "leave it"
UNCHANGED = 0xFFFFFFFF
ID_MAX = 0xFFFFFFFE


@dataclass(frozen=True, slots=True)
class Kept:
    """What a blob's metadata says of its mode and owner (None: nothing)."""

    mode: int | None = None  # permission bits, 07777
    uid: int | None = None
    gid: int | None = None
    is_link: bool = False
    special: int = 0  # a FIFO's, socket's or device's type bits (SPECIAL_TYPES); 0: none
    rdev: int = 0     # a device's number


def _number(text: str | None, base: int, top: int) -> int | None:
    if not text:
        return None
    try:
        value = int(text.strip(), base)
    except ValueError:
        return None
    return value if 0 <= value <= top else None


def from_metadata(metadata: Mapping[str, str]) -> Kept:
    """Mode, owner and link flag from blob metadata (keys in any case); bad values
    count as absent."""
    lower = {key.lower(): value for key, value in metadata.items()}
    mode = _number(lower.get(MODE_KEY), 8, 0o177777)
    special = 0 if mode is None or stat.S_IFMT(mode) not in SPECIAL_TYPES else stat.S_IFMT(mode)
    return Kept(mode=None if mode is None else stat.S_IMODE(mode),
                uid=_number(lower.get(UID_KEY), 10, ID_MAX),
                gid=_number(lower.get(GID_KEY), 10, ID_MAX),
                is_link=lower.get(SYMLINK_KEY, "").lower() == "true",
                special=special,
                rdev=(_number(lower.get(RDEV_KEY), 16, 0xFFFFFFFFFFFFFFFF) or 0) if special else 0)


def file_type(*, is_dir: bool, is_link: bool, special: int = 0) -> int:
    if special:
        return special
    if is_link:
        return stat.S_IFLNK
    return stat.S_IFDIR if is_dir else stat.S_IFREG


def to_metadata(*, is_dir: bool, mode: int | None, uid: int | None,
                gid: int | None, special: int = 0) -> dict[str, str]:
    """The metadata that keeps a mode and owner (rclone's format: `mode` octal with
    the type bits, as rclone's local backend writes `100644`)."""
    kept: dict[str, str] = {}
    if mode is not None:
        kept[MODE_KEY] = format(file_type(is_dir=is_dir, is_link=False, special=special)
                                | mode, "o")
    if uid is not None:
        kept[UID_KEY] = str(uid)
    if gid is not None:
        kept[GID_KEY] = str(gid)
    return kept


@dataclass(frozen=True)
class Caller:
    """Who makes a call: pyfuse3's RequestContext, in the terms used here."""

    uid: int
    gid: int
    pid: int = 0
    umask: int = 0o022


def caller_groups(caller: Caller) -> set[int]:
    """The caller's groups (its gid and supplementary groups, from /proc)."""
    groups = {caller.gid}
    try:
        with open(f"/proc/{caller.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    groups.update(int(group) for group in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass  # gone already: its primary group is what is known
    return groups


class Permissions:
    """The mode and owner shown for a node, and those a new one gets."""

    def __init__(self, *, mode: str = KEPT, uid: int, gid: int, umask: int) -> None:
        self.kept = mode == KEPT
        self.uid = uid
        self.gid = gid
        self.umask = umask

    def shown(self, *, is_dir: bool, is_link: bool, mode: int | None, uid: int | None,
              gid: int | None, writable: bool, special: int = 0) -> tuple[int, int, int]:
        """(st_mode, st_uid, st_gid) for a node with what it keeps (None: nothing)."""
        kind = file_type(is_dir=is_dir, is_link=is_link, special=special)
        if is_link:
            bits = 0o777  # links' own mode is never used (Linux shows 0777)
        elif self.kept and mode is not None:
            bits = mode
        else:
            bits = (0o777 if is_dir else 0o666) & ~self.umask
        if not writable and not is_link:
            bits &= ~0o222
        if not self.kept:
            return kind | bits, self.uid, self.gid
        return (kind | bits, self.uid if uid is None else uid,
                self.gid if gid is None else gid)

    def new(self, caller: Caller, requested: int, *, parent_mode: int,
            parent_gid: int, is_dir: bool) -> Kept:
        """What a new file or folder keeps: the mode asked for less the caller's umask,
        the caller's uid, and its gid, or the folder's if the folder is set-group-ID
        (as Linux does; a new folder then is set-group-ID too). Nothing when fixed."""
        if not self.kept:
            return Kept()
        mode = stat.S_IMODE(requested) & ~caller.umask
        gid = caller.gid
        if parent_mode & stat.S_ISGID:
            gid = parent_gid
            if is_dir:
                mode |= stat.S_ISGID
        return Kept(mode=mode, uid=caller.uid, gid=gid)

    def changes(self, caller: Caller, *, shown: tuple[int, int, int], mode: int | None,
                uid: int | None, gid: int | None) -> dict[str, int]:
        """What a chmod or chown (None: not asked) keeps: `mode`, `uid`, `gid` for
        Files.set_attributes. A new owner is kept with the mode shown, and the reverse,
        so the blob says all three. Nothing when fixed, nor a link's mode (Linux has no
        lchmod)."""
        if not self.kept:
            return {}  # accepted and not kept
        shown_mode, owner, group = shown
        kept: dict[str, int] = {}
        if uid is not None or gid is not None:
            asked_uid = UNCHANGED if uid is None else uid
            asked_gid = UNCHANGED if gid is None else gid
            self.check_chown(caller, owner=owner, uid=asked_uid, gid=asked_gid,
                             current_gid=group)
            kept["uid"] = owner if asked_uid == UNCHANGED else asked_uid
            kept["gid"] = group if asked_gid == UNCHANGED else asked_gid
        if stat.S_ISLNK(shown_mode) or not (kept or mode is not None):
            return kept
        kept["mode"] = stat.S_IMODE(shown_mode if mode is None else mode)
        return kept

    @staticmethod
    def check_chown(caller: Caller, *, owner: int, uid: int, gid: int,
                    current_gid: int) -> None:
        """Root gives anything to anyone; others only their own files, to themselves,
        and to a group they belong to (EPERM otherwise)."""
        if caller.uid == 0:
            return
        if uid != UNCHANGED and (caller.uid != owner or uid != owner):
            raise NotPermitted("only root gives a file to another user")
        if gid != UNCHANGED and (caller.uid != owner or (
                gid != current_gid and gid not in caller_groups(caller))):
            raise NotPermitted("a file goes only to a group its owner is in")
