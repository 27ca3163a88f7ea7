"""Shared access signatures, all made by one signer (`sign`): `blobmount sas`
(`mint_sas`), each AzCopy job's (`sas_for_azcopy`, `azcopy_blob`, `azcopy_folder`),
the source of a server-side copy (`_copy_source_sas`) and the snapshot Put Block From
URL reads (`snapshot_source`). Each is as narrow and short-lived as its job allows.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from urllib.parse import quote

from azure.storage.blob import (
    BlobSasPermissions,
    ContainerSasPermissions,
    UserDelegationKey,
    generate_blob_sas,
    generate_container_sas,
)

from ..access import (
    AZCOPY_SAS_LIFETIME,
    COPY_SAS_LIFETIME,
    DELEGATION_KEY_LIFETIME,
    SAS_CLOCK_SKEW,
    AzcopyAccess,
    sas_lifetime,
    service_time,
    trust_args,
)
from ..config import Account
from ..errors import RemoteAuthError, RemoteError
from .base import ContainerBase

log = logging.getLogger("blobmount.azure")

#: The permission letters a container SAS may carry, in the order Azure wants them.
CONTAINER_SAS_LETTERS = "racwdxyltfmei"
#: The letters a directory SAS (sr=d) may carry.
DIRECTORY_SAS_LETTERS = "racwdxyltmei"


def sign(account: Account, container: str, credential: str | UserDelegationKey, *,
         permissions: str, expiry: dt.datetime, blob: str | None = None,
         snapshot: str | None = None, directory: bool = False,
         protocol: str | None = None) -> str:
    """A SAS token (without '?'): for the container, or for one `blob` (one `snapshot`
    of it; or, with `directory`, the folder of that name: sr=d). It grants
    `permissions` (letters, in any order) from SAS_CLOCK_SKEW ago (clocks drift) until
    `expiry`. `credential`: the account key, or a user delegation key (a user
    delegation SAS, for an account known by an identity alone)."""
    if isinstance(credential, str):
        signed_by: dict = {"account_key": credential}
    else:
        signed_by = {"user_delegation_key": credential}
    start = dt.datetime.now(dt.UTC) - SAS_CLOCK_SKEW
    if blob is None:
        return generate_container_sas(
            account.account_name, container,
            permission=ContainerSasPermissions.from_string(permissions), start=start,
            expiry=expiry, protocol=protocol, **signed_by)
    return generate_blob_sas(
        account.account_name, container, blob, snapshot=snapshot,
        permission=BlobSasPermissions.from_string(permissions), start=start, expiry=expiry,
        protocol=protocol, is_directory=directory or None, **signed_by)


def _from_now(lifetime: dt.timedelta) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + lifetime


def mint_sas(account: Account, container: str, *, permissions: str, expiry: dt.datetime,
             prefix: str = "") -> str:
    """A SAS token (without '?') for `container`, signed with the account's key.

    Raises RemoteAuthError when the account has no key, ValueError for unknown letters.

    With a `prefix`, a directory SAS (sr=d) that reaches only that folder: Azure honours
    it on accounts with a hierarchical namespace (ADLS Gen2) only. A container SAS
    reaches the whole container.
    """
    if not account.account_key:
        raise RemoteAuthError(
            f"account {account.name}: a SAS is signed with the account key, and this account"
            " has none (give account_key or a connection string with AccountKey)")
    allowed = DIRECTORY_SAS_LETTERS if prefix else CONTAINER_SAS_LETTERS
    unknown = sorted(set(permissions) - set(allowed))
    if not permissions or unknown:
        raise ValueError(
            f"permissions {permissions!r}: use letters of {allowed}"
            f" (r read, l list, w write, c create, a add, d delete)")
    ordered = "".join(letter for letter in allowed if letter in permissions)
    protocol = "https" if account.endpoint.startswith("https:") else None
    return sign(account, container, account.account_key, permissions=ordered, expiry=expiry,
                blob=prefix.strip("/") or None, directory=bool(prefix), protocol=protocol)


class SasAccess(ContainerBase):
    """How AzCopy and the service itself reach a container's blobs (a part of Remote)."""

    #: how AzCopy logs in, for an account known by an identity alone (None: it cannot)
    azcopy_login: dict[str, str] | None
    _delegation_key: UserDelegationKey | None
    _delegation_key_lock: threading.Lock
    _hns: bool | None

    def _key(self) -> str | None:
        return self.account.account_key

    @property
    def azcopy_can_sign(self) -> bool:
        """Whether AzCopy jobs can be given a SAS (uploads by AzCopy need one)."""
        return bool(self._key() or self.account.sas_token)

    @property
    def azcopy_usable(self) -> bool:
        """Whether AzCopy can reach the container: by a SAS, or by logging in as the
        account's identity (see azcopy_login). Otherwise transfers go through the SDK."""
        return self.azcopy_can_sign or self.azcopy_login is not None

    def azcopy_blob(self, blob: str, *, size: int | None) -> AzcopyAccess:
        """How an AzCopy job downloads one blob of `size` bytes: as the identity, with no
        SAS on its command line; else with a SAS that reads that blob only and lasts
        about as long as the job (sas_lifetime)."""
        if self.azcopy_login is not None:
            return self._logged_in(self.blob_url(blob))
        sas = self.sas_for_azcopy(blob=blob, lifetime=sas_lifetime(size))
        return AzcopyAccess(f"{self.blob_url(blob)}?{sas}", {})

    def azcopy_folder(self, folder: str, *, size: int | None) -> AzcopyAccess:
        """How an AzCopy job downloads listed blobs under `folder` ('' or 'a/b/'): as
        the identity; else with a read-only SAS (no listing: the job's files are
        listed) for that folder where the account has a hierarchical namespace, for
        the container where it has not (Azure has no narrower SAS for several blobs)."""
        url = self.blob_url(folder.rstrip("/")) if folder else self.blob_url()
        if self.azcopy_login is not None:
            return self._logged_in(url)
        key = self._key()
        if key is None:
            return AzcopyAccess(f"{url}?{self.sas_for_azcopy()}", {})
        directory = bool(folder) and self._hierarchical()
        sas = sign(self.account, self.container, key, permissions="r",
                   expiry=_from_now(sas_lifetime(size)),
                   blob=folder.strip("/") if directory else None, directory=directory)
        return AzcopyAccess(f"{url}?{sas}", {})

    def _logged_in(self, url: str) -> AzcopyAccess:
        assert self.azcopy_login is not None
        return AzcopyAccess(url, dict(self.azcopy_login), trust_args(self.account.endpoint))

    def _hierarchical(self) -> bool:
        """Whether the account has a hierarchical namespace (asked once; False when the
        question fails: a container SAS then works where a folder's would not)."""
        if self._hns is None:
            try:
                with self._call(f"account {self.account.account_name}"):
                    info = self._service.get_account_information()
                self._hns = bool(info.get("is_hns_enabled"))
            except RemoteError as exc:
                log.info("cannot tell whether %s has a hierarchical namespace: %s",
                         self.label, exc)
                self._hns = False
        return self._hns

    def sas_for_azcopy(self, *, blob: str | None = None, write: bool = False,
                       lifetime: dt.timedelta = AZCOPY_SAS_LIFETIME) -> str:
        """A short-lived SAS token for one AzCopy job: one blob, or the container.

        Read-only unless `write` (then create and write, no read); valid for `lifetime`
        (azfuse's `url` asks for 30 days). Made from the account key where there is one;
        otherwise the account's own SAS token is all we have.
        """
        key = self._key()
        if not key:
            if self.account.sas_token:
                return self.account.sas_token
            raise RemoteAuthError(
                f"account {self.account.name}: AzCopy needs an account key or a SAS token"
            )
        # A blob: read, or write (no read). The container: read and list, and write.
        permissions = ("cw" if write else "r") if blob is not None else (
            "rlcw" if write else "rl")
        return sign(self.account, self.container, key, permissions=permissions,
                    expiry=_from_now(lifetime), blob=blob)

    def _copy_source_sas(self, blob: str) -> str:
        """A SAS that reads `blob`, for the service to copy it: signed with the account
        key, or the account's own SAS; for an account known by an identity alone, a user
        delegation SAS, signed with a key the identity asks the service for."""
        if self._key() or self.account.sas_token:
            return self.sas_for_azcopy(blob=blob, lifetime=COPY_SAS_LIFETIME)
        now = dt.datetime.now(dt.UTC)
        return sign(self.account, self.container, self._user_delegation_key(now),
                    permissions="r", expiry=now + COPY_SAS_LIFETIME, blob=blob)

    def _user_delegation_key(self, now: dt.datetime) -> UserDelegationKey:
        """A user delegation key valid for at least COPY_SAS_LIFETIME more; one is kept
        and reused (asked for outside the lock: no lock is held across a call)."""
        with self._delegation_key_lock:
            held = self._delegation_key
        if (held is not None and held.signed_expiry is not None
                and service_time(held.signed_expiry) - now > COPY_SAS_LIFETIME):
            return held
        fresh = self._service.get_user_delegation_key(now - SAS_CLOCK_SKEW,
                                                      now + DELEGATION_KEY_LIFETIME)
        with self._delegation_key_lock:
            self._delegation_key = fresh
        return fresh

    def snapshot_source(self, blob: str, snapshot: str) -> str:
        """The URL Put Block From URL reads a snapshot by: with a SAS of that snapshot
        alone, read-only, for AZCOPY_SAS_LIFETIME (or the account's own SAS token)."""
        key = self._key()
        if key:
            token = sign(self.account, self.container, key, permissions="r",
                         expiry=_from_now(AZCOPY_SAS_LIFETIME), blob=blob, snapshot=snapshot)
        elif self.account.sas_token:
            token = self.account.sas_token.lstrip("?")
        else:
            raise RemoteAuthError(f"account {self.account.name}: no key or SAS token to"
                                  " copy blocks with")
        return f"{self.blob_url(blob)}?snapshot={quote(snapshot)}&{token}"
