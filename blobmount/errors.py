"""Exception types shared by every layer.

Every error a user can cause (a bad config, a wrong key, a missing container) is a
`BlobmountError` whose message is one complete line meant for the user: the CLI
prints it as it is, without a traceback. Errors that reach a FUSE handler carry the
errno the kernel should see.
"""

from __future__ import annotations

import errno


class BlobmountError(Exception):
    """An error with a one-line message meant for the user."""

    #: errno a FUSE handler answers with when this error reaches it.
    errno: int = errno.EIO


class ConfigError(BlobmountError):
    """The config file is missing, unreadable or wrong.

    The message names the file, the key and what is wrong, e.g.
    ``/etc/blobmount/x.yaml: mounts[0].container: missing``.
    """

    errno = errno.EINVAL

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class MountPointError(BlobmountError):
    """The mount point is missing, not a folder, not empty or already mounted."""


class RemoteError(BlobmountError):
    """A call to the storage account failed."""


class RemoteNotFound(RemoteError):
    """The blob or container does not exist (HTTP 404)."""

    errno = errno.ENOENT


class RemoteAuthError(RemoteError):
    """The account rejected the credentials or the SAS lacks a permission (HTTP 403)."""

    errno = errno.EACCES


class RemoteUnreachable(RemoteError):
    """The account's endpoint could not be reached (DNS, refused, timed out)."""


class RemoteCorrupt(RemoteError):
    """Downloaded bytes that do not match the blob's Content-MD5 (never served: EIO)."""


class TransferError(BlobmountError):
    """A download or upload failed (AzCopy job or SDK transfer)."""


class ToolNotFound(BlobmountError):
    """A helper program (AzCopy, Azurite) could not be found."""


class RemoteConflict(RemoteError):
    """The blob changed in the container since the version a local change was based on."""


class StoreError(BlobmountError):
    """The metadata store cannot be used (a newer schema, a damaged file)."""


class RemoteUnsupported(RemoteError):
    """The account does not offer this feature (blob index tags on some accounts)."""

    errno = errno.ENOTSUP
