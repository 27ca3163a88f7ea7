"""Exception types shared by every layer, and the one table of their errnos.

Every error a user can cause (a bad config, a wrong key, a missing container) is a
`BlobmountError` whose message is one complete line meant for the user: the CLI
prints it as it is, without a traceback. An error that reaches a FUSE handler is
answered with the errno `ERRNO` gives its type (`errno_of`): a type has one errno,
whoever raises it, and this table is the only place that says which.
"""

from __future__ import annotations

import errno as codes
from typing import Any


class BlobmountError(Exception):
    """An error with a one-line message meant for the user."""

    @property
    def errno(self) -> int:
        """The errno a FUSE handler answers with when this error reaches it."""
        return errno_of(self)


class ConfigError(BlobmountError):
    """The config file is missing, unreadable or wrong.

    The message names the file, the key and what is wrong, e.g.
    ``/etc/blobmount/x.yaml: mounts[0].container: missing``.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class MountPointError(BlobmountError):
    """The mount point is missing, not a folder, not empty or already mounted."""


class StoreError(BlobmountError):
    """The metadata store cannot be used (a newer schema, a damaged file)."""


class ToolNotFound(BlobmountError):
    """A helper program (AzCopy, Azurite) could not be found."""


class TransferError(BlobmountError):
    """A download or upload failed (AzCopy job or SDK transfer)."""


# -- the storage account ----------------------------------------------------------------

class RemoteError(BlobmountError):
    """A call to the storage account failed."""


class RemoteNotFound(RemoteError):
    """The blob or container does not exist (HTTP 404)."""


class RemoteAuthError(RemoteError):
    """The account rejected the credentials or the SAS lacks a permission (HTTP 403)."""


class RemoteUnreachable(RemoteError):
    """The account's endpoint could not be reached (DNS, refused, timed out)."""


class RemoteCorrupt(RemoteError):
    """Downloaded bytes that do not match the blob's Content-MD5 (never served: EIO)."""


class RemoteConflict(RemoteError):
    """The blob changed in the container since the version a local change was based on."""


class RemoteUnsupported(RemoteError):
    """The account does not offer this feature (blob index tags on some accounts)."""


# -- the tree and its files, as POSIX calls see them ------------------------------------

class NotFound(BlobmountError):
    """No such file, folder or inode."""


class NotADirectory(BlobmountError):
    """A folder was needed and this is a file."""


class IsADirectory(BlobmountError):
    """A file was needed and this is a folder."""


class Exists(BlobmountError):
    """The name is taken, here or in the container."""


class NotEmpty(BlobmountError):
    """The folder still has children."""


class NameTooLong(BlobmountError):
    """A name segment longer than NAME_MAX bytes."""


class InvalidName(BlobmountError):
    """A name that cannot be a blob name segment (or not UTF-8)."""


class InvalidArgument(BlobmountError):
    """A call or value this file system cannot take (a rename's exchange, a readlink of
    a file, an xattr value Azure refuses)."""


class ReadOnly(BlobmountError):
    """The entry is read-only."""


class PermissionDenied(BlobmountError):
    """The mount table's own folders: nothing is made in them."""


class NotPermitted(BlobmountError):
    """What POSIX refuses to anyone but the owner or root, or blobs cannot hold (hard
    links, mknod of an unknown type, a read-only attribute)."""


class CrossDevice(BlobmountError):
    """A rename across mount entries."""


class NotSupported(BlobmountError):
    """Not offered for this node or name (an xattr of a folder, outside user.meta.*)."""


class Unimplemented(BlobmountError):
    """A call this mount does not implement at all (xattrs when turned off): the kernel
    stops asking."""


class NoSuchAttribute(BlobmountError):
    """No extended attribute of that name."""


class Busy(BlobmountError):
    """The file is being written: try again once it is closed."""


# -- the command line and its clients -----------------------------------------------------

class OutsideTheMount(BlobmountError):
    """A path that leaves the mount point."""


class DaemonNotRunning(BlobmountError):
    """No blobmount daemon answers for this mount point."""


class NotUnderAMount(BlobmountError):
    """A path that is not under any blobmount mount point."""


class HelperUsage(BlobmountError):
    """The helper was called with arguments or options it cannot use."""


class PrefetchFailed(BlobmountError):
    """Some paths could not be prefetched; `result` says which and why."""

    def __init__(self, result: dict[str, Any]) -> None:
        failed = result["failed"]
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        super().__init__(f"cannot prefetch {first['path']}: {first['error']}{more}")
        self.result = result


class SyncFailed(BlobmountError):
    """Some uploads are still not in the container; `failed` lists them."""

    def __init__(self, failed: list[dict[str, str]]) -> None:
        super().__init__(f"{len(failed)} uploads failed; the first: {failed[0]['blob']}:"
                         f" {failed[0]['error']}")
        self.failed = failed


#: Every error type of the package and the errno the kernel sees for it (as
#: mountpoint-s3's fs/error.rs maps its errors). A type missing here has its nearest
#: base's; tests/unit/test_errors.py holds every type of the package to one entry.
ERRNO: dict[type, int] = {
    BlobmountError: codes.EIO,
    ConfigError: codes.EINVAL,
    MountPointError: codes.EIO,
    StoreError: codes.EIO,
    ToolNotFound: codes.EIO,
    TransferError: codes.EIO,
    RemoteError: codes.EIO,
    RemoteNotFound: codes.ENOENT,
    RemoteAuthError: codes.EACCES,
    RemoteUnreachable: codes.EIO,
    RemoteCorrupt: codes.EIO,
    RemoteConflict: codes.EIO,
    RemoteUnsupported: codes.ENOTSUP,
    NotFound: codes.ENOENT,
    NotADirectory: codes.ENOTDIR,
    IsADirectory: codes.EISDIR,
    Exists: codes.EEXIST,
    NotEmpty: codes.ENOTEMPTY,
    NameTooLong: codes.ENAMETOOLONG,
    InvalidName: codes.EINVAL,
    InvalidArgument: codes.EINVAL,
    ReadOnly: codes.EROFS,
    PermissionDenied: codes.EACCES,
    NotPermitted: codes.EPERM,
    CrossDevice: codes.EXDEV,
    NotSupported: codes.ENOTSUP,
    Unimplemented: codes.ENOSYS,
    NoSuchAttribute: codes.ENODATA,
    Busy: codes.EBUSY,
    OutsideTheMount: codes.EINVAL,
    DaemonNotRunning: codes.ENOTCONN,
    NotUnderAMount: codes.EINVAL,
    HelperUsage: codes.EINVAL,
    PrefetchFailed: codes.EIO,
    SyncFailed: codes.EIO,
}

#: The POSIX answers to a caller's request (no such name, it exists, read-only, not
#: offered, ...), not failures of the mount: a FUSE handler logs them at debug level
#: only (`ls -l` asks for security.* on every file, git tries a hard link, a shell
#: looks up names that are not there). The rest (the account, the store, a transfer,
#: a bug) are logged as warnings.
ANSWERS: tuple[type, ...] = (
    NotFound, NotADirectory, IsADirectory, Exists, NotEmpty, NameTooLong, InvalidName,
    InvalidArgument, ReadOnly, PermissionDenied, NotPermitted, CrossDevice, NotSupported,
    Unimplemented, NoSuchAttribute, Busy, RemoteNotFound, RemoteUnsupported,
)


def errno_of(exc: BaseException) -> int:
    """The errno for an exception: its type's in `ERRNO` (or its nearest base's), an
    OSError's own, EIO for anything else."""
    for kind in type(exc).__mro__:
        code = ERRNO.get(kind)
        if code is not None:
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return codes.EIO
