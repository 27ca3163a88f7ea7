"""How AzCopy and the service are given access to a container: the login AzCopy takes
from its environment for an account known by an identity, how long each SAS lasts,
and which endpoints AzCopy may send a token to. No I/O here: `remote` signs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# AzCopy jobs get a SAS that expires soon: its command line is visible to local users.
# It lasts AZCOPY_SAS_BASE plus the job's bytes at AZCOPY_SAS_MIN_RATE: a job slower than
# that meets an expired SAS (403) and fails. Jobs of unknown size get AZCOPY_SAS_LIFETIME.
AZCOPY_SAS_LIFETIME = dt.timedelta(minutes=30)
AZCOPY_SAS_BASE = dt.timedelta(minutes=10)
AZCOPY_SAS_MIN_RATE = 1024 * 1024  # bytes a second
# Clocks drift: a SAS starts a little before now.
SAS_CLOCK_SKEW = dt.timedelta(minutes=5)
# The source of a server-side copy (a rename) is read by the service within seconds.
COPY_SAS_LIFETIME = dt.timedelta(minutes=15)
# AzCopy hands a token only to hosts under these (its --trusted-microsoft-suffixes).
AZURE_STORAGE_SUFFIXES = (".core.windows.net", ".core.chinacloudapi.cn",
                          ".core.usgovcloudapi.net", ".core.cloudapi.de", ".storage.azure.net")
# A user delegation key (accounts known by an identity) is asked for this long, and a new
# one asked for when less than COPY_SAS_LIFETIME of it is left.
DELEGATION_KEY_LIFETIME = dt.timedelta(hours=2)


@dataclass(frozen=True)
class AzcopyAccess:
    """How one AzCopy job reaches the container: the URL to give it (with a SAS in its
    query, or none when AzCopy logs in as the account's identity) and what to add to its
    environment (the login)."""

    url: str
    env: Mapping[str, str]
    args: tuple[str, ...] = ()  # more of AzCopy's flags


def azcopy_login(environ: Mapping[str, str]) -> dict[str, str] | None:
    """What AzCopy's environment needs to log in as the identity that
    DefaultAzureCredential takes from `environ`; None when that cannot be told.

    An AZCOPY_AUTO_LOGIN_TYPE already set wins (AzCopy reads its other AZCOPY_* variables
    from the environment it inherits). Otherwise, in DefaultAzureCredential's order: a
    service principal with a secret or a certificate (AZURE_CLIENT_ID, AZURE_TENANT_ID,
    AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH), workload identity
    (AZURE_FEDERATED_TOKEN_FILE), a managed identity whose endpoint is named
    (IDENTITY_ENDPOINT or MSI_ENDPOINT; AZURE_CLIENT_ID picks a user-assigned one). A VM's
    managed identity or an `az login` must be named: AZCOPY_AUTO_LOGIN_TYPE=MSI or AZCLI.
    """
    chosen = environ.get("AZCOPY_AUTO_LOGIN_TYPE", "").strip().upper()
    if chosen:
        # DEVICE asks a person to sign in: a daemon cannot.
        return None if chosen == "DEVICE" else {"AZCOPY_AUTO_LOGIN_TYPE": chosen}
    client = environ.get("AZURE_CLIENT_ID", "")
    tenant = environ.get("AZURE_TENANT_ID", "")
    spn = {"AZCOPY_AUTO_LOGIN_TYPE": "SPN", "AZCOPY_SPA_APPLICATION_ID": client,
           "AZCOPY_TENANT_ID": tenant}
    if client and tenant and environ.get("AZURE_CLIENT_SECRET"):
        return {**spn, "AZCOPY_SPA_CLIENT_SECRET": environ["AZURE_CLIENT_SECRET"]}
    if client and tenant and environ.get("AZURE_CLIENT_CERTIFICATE_PATH"):
        spn["AZCOPY_SPA_CERT_PATH"] = environ["AZURE_CLIENT_CERTIFICATE_PATH"]
        if environ.get("AZURE_CLIENT_CERTIFICATE_PASSWORD"):
            spn["AZCOPY_SPA_CERT_PASSWORD"] = environ["AZURE_CLIENT_CERTIFICATE_PASSWORD"]
        return spn
    if client and tenant and environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return {"AZCOPY_AUTO_LOGIN_TYPE": "WORKLOAD"}  # AzCopy reads the AZURE_* ones
    if environ.get("IDENTITY_ENDPOINT") or environ.get("MSI_ENDPOINT"):
        login = {"AZCOPY_AUTO_LOGIN_TYPE": "MSI"}
        if client:
            login["AZCOPY_MSI_CLIENT_ID"] = client
        return login
    return None


def sas_lifetime(size: int | None) -> dt.timedelta:
    """How long the SAS of an AzCopy job of `size` bytes (None: unknown) lasts."""
    if size is None:
        return AZCOPY_SAS_LIFETIME
    return AZCOPY_SAS_BASE + dt.timedelta(seconds=size / AZCOPY_SAS_MIN_RATE)


def trust_args(endpoint: str) -> tuple[str, ...]:
    """AzCopy's flag that lets it send its token to `endpoint` when that is outside
    Azure's own domains (a private endpoint's name, an emulator): the SDK already sends
    it there, since the config names that endpoint for the account."""
    host = urlsplit(endpoint).netloc
    if host.rsplit(":", 1)[0].lower().endswith(AZURE_STORAGE_SUFFIXES):
        return ()
    return (f"--trusted-microsoft-suffixes={host}",)


def service_time(when: str | dt.datetime) -> dt.datetime:
    """A time of the service ('2026-12-01T15:00:00Z') as an aware datetime."""
    if isinstance(when, dt.datetime):
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
