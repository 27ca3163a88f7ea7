"""Azure credentials as the config gives them: account names, endpoints, account keys,
SAS tokens and connection strings, each checked, and the secrets within them found for
masking. Azurite's well-known account lives here, the one place it is written.

Messages never include a key or a token.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from blobmount.log import register_secret

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published well-known key: not a secret, but registered like one anyway.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Where `UseDevelopmentStorage=true` points, as the Azure SDKs define it.
AZURITE_ENDPOINT = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"

# Azure's rule for account names.
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")


def check_account_name(value: str) -> str:
    if _ACCOUNT_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"invalid storage account name {value!r}: use 3-24 lowercase letters and digits"
    )


def check_endpoint(value: str) -> str:
    """A blob endpoint URL, without its trailing slash. Never echoed: it might hold a SAS."""
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "expected an http:// or https:// URL, such as https://ACCOUNT.blob.core.windows.net"
        )
    if parts.query or parts.fragment or "?" in value:
        raise ValueError("must not contain '?' or '#': give a SAS as sas_token")
    return value.strip().rstrip("/")


def default_endpoint(account_name: str) -> str:
    return f"https://{account_name}.blob.core.windows.net"


def check_account_key(value: str) -> str:
    """An account key, which is base64. The message never includes the key."""
    key = value.strip()
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise ValueError(
            "not valid base64 (an account key is the 88-character string from the portal)"
        )
    return key


def check_sas_token(value: str) -> str:
    """A SAS token without its leading '?'. The message never includes the token."""
    token = value.strip().removeprefix("?")
    if not token:
        raise ValueError("empty")
    if any(c.isspace() for c in token):
        raise ValueError("contains whitespace")
    if "sig" not in parse_qs(token, keep_blank_values=True):
        raise ValueError("not a SAS token: it has no sig= parameter")
    return token


def parse_connection_string(text: str) -> tuple[str, str, str | None, str | None]:
    """(account_name, endpoint, account_key, sas_token) from an Azure connection string."""
    pairs: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        label, sep, value = part.partition("=")
        if not sep or not label.strip():
            raise ValueError("malformed: expected Key=Value pairs separated by ';'")
        pairs[label.strip().lower()] = value.strip()
    if not pairs:
        raise ValueError("empty")
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return AZURITE_ACCOUNT, AZURITE_ENDPOINT, AZURITE_KEY, None
    key = pairs.get("accountkey") or None
    sas = pairs.get("sharedaccesssignature") or None
    register_secret(key)
    register_secret(sas)
    if key is not None:
        key = _prefixed("AccountKey", check_account_key, key)
    if sas is not None:
        sas = _prefixed("SharedAccessSignature", check_sas_token, sas)
    name = pairs.get("accountname") or None
    if pairs.get("blobendpoint"):
        endpoint = _prefixed("BlobEndpoint", check_endpoint, pairs["blobendpoint"])
        name = name or _account_name_from_endpoint(endpoint)
    else:
        if not name:
            raise ValueError("has neither AccountName nor BlobEndpoint")
        protocol = pairs.get("defaultendpointsprotocol", "https").lower()
        if protocol not in ("http", "https"):
            raise ValueError("DefaultEndpointsProtocol must be http or https")
        suffix = pairs.get("endpointsuffix", "core.windows.net").strip(".")
        endpoint = f"{protocol}://{name}.blob.{suffix}"
    return _prefixed("AccountName", check_account_name, name), endpoint, key, sas


def _prefixed(part: str, check: Callable[[str], str], value: str) -> str:
    """`check(value)`, naming which part of the connection string was wrong."""
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{part}: {exc}") from None


def _account_name_from_endpoint(endpoint: str) -> str:
    """The account in a BlobEndpoint: first path segment for an emulator, else first label."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if host == "localhost" or "." not in host or _is_ip(host):
        return parts.path.strip("/").split("/")[0]
    return host.split(".", 1)[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def sas_signatures(token: str) -> list[str]:
    """The sig= values of a SAS, as written and decoded: what logs would show of it."""
    found: list[str] = []
    for part in token.split("&"):
        if part.lower().startswith("sig="):
            raw = part[len("sig=") :]
            found.extend((raw, unquote(raw)))
    return found


def connection_string_secrets(text: str) -> list[str]:
    """AccountKey and SharedAccessSignature (and its sig) in a connection string."""
    found = []
    for part in text.split(";"):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key == "accountkey":
            found.append(value.strip())
        elif key == "sharedaccesssignature":
            found.append(value.strip())
            found.extend(sas_signatures(value.strip().removeprefix("?")))
    return found
