"""`blobmount sas` and azure.mint_sas: what the token says, and every refusal."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

import pytest
import yaml
from click.testing import CliRunner

from blobmount.azure import mint_sas
from blobmount.cli import cli
from blobmount.config import AZURITE_KEY, Account
from blobmount.config.credentials import parse_connection_string
from blobmount.errors import RemoteAuthError

EXPIRY = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)


def account(endpoint="https://acct.blob.core.windows.net", **secrets) -> Account:
    return Account(name="main", account_name="acct", endpoint=endpoint, **secrets)


def fields(token: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(token).items()}


def test_container_sas():
    token = fields(mint_sas(account(account_key=AZURITE_KEY), "data", permissions="lr",
                            expiry=EXPIRY))
    assert token["sr"] == "c" and token["sp"] == "rl"  # Azure's letter order
    assert token["se"] == "2999-01-01T00:00:00Z" and token["spr"] == "https"
    started = dt.datetime.fromisoformat(token["st"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=4) < dt.datetime.now(dt.UTC) - started < dt.timedelta(minutes=6)


def test_http_endpoint_and_connection_string_key():
    conn = ("DefaultEndpointsProtocol=http;AccountName=acct;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:1/acct;")
    # The key is the one the config read out of the connection string.
    _, endpoint, key, _ = parse_connection_string(conn)
    token = fields(mint_sas(account(endpoint, account_key=key, connection_string=conn),
                            "data", permissions="racwdl", expiry=EXPIRY))
    assert token["sp"] == "racwdl" and "spr" not in token


def test_directory_sas_for_a_prefix():
    token = fields(mint_sas(account(account_key=AZURITE_KEY), "data", permissions="rl",
                            expiry=EXPIRY, prefix="/users/alice/"))
    assert token["sr"] == "d" and token["sdd"] == "2"


def test_refusals():
    with pytest.raises(RemoteAuthError, match="has none"):
        mint_sas(account(sas_token="sv=1&sp=rl&sig=x"), "data", permissions="r",
                 expiry=EXPIRY)
    with pytest.raises(ValueError, match="permissions 'rq'"):
        mint_sas(account(account_key=AZURITE_KEY), "data", permissions="rq", expiry=EXPIRY)
    with pytest.raises(ValueError, match="permissions ''"):
        mint_sas(account(account_key=AZURITE_KEY), "data", permissions="", expiry=EXPIRY)
    with pytest.raises(ValueError, match="permissions 'f'"):  # no 'f' for a folder
        mint_sas(account(account_key=AZURITE_KEY), "data", permissions="f", expiry=EXPIRY,
                 prefix="a")


def test_cli_picks_the_only_account_and_asks_among_several(tmp_path):
    accounts = {"one": {"account_name": "acctone", "account_key": AZURITE_KEY}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"accounts": accounts,
                                      "mounts": [{"local": "d", "account": "one",
                                                  "container": "data"}]}))
    runner = CliRunner()
    result = runner.invoke(cli, ["sas", "--config", str(config), "--container", "data"])
    assert result.exit_code == 0 and fields(result.output.strip())["sp"] == "rl"
    accounts["two"] = {"account_name": "accttwo", "account_key": AZURITE_KEY}
    config.write_text(yaml.safe_dump({"accounts": accounts,
                                      "mounts": [{"local": "d", "account": "one",
                                                  "container": "data"}]}))
    result = runner.invoke(cli, ["sas", "--config", str(config), "--container", "data"])
    assert result.exit_code == 1 and "name one with --account (one, two)" in str(
        result.exception)
    # By its key under accounts:, or by its storage account name.
    for name in ("two", "accttwo"):
        result = runner.invoke(cli, ["sas", "--config", str(config), "--account", name,
                                     "--container", "data", "--expiry", "2d"])
        assert result.exit_code == 0, result.output


# ------------------------------------------------------------ the SAS of an AzCopy job

def _azcopy_sas(**scope) -> dict[str, str]:
    from blobmount.azure import Remote

    remote = Remote(account("http://127.0.0.1:1/acct", account_key=AZURITE_KEY), "data")
    try:
        return fields(remote.sas_for_azcopy(**scope))
    finally:
        remote.close()


def _lifetime(token: dict[str, str]) -> dt.timedelta:
    expiry = dt.datetime.fromisoformat(token["se"].replace("Z", "+00:00"))
    return expiry - dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(("scope", "resource", "letters"), [
    ({"blob": "a/b.bin"}, "b", "r"),                     # a download: one blob, read
    ({"blob": "a/b.bin", "write": True}, "b", "cw"),     # an upload: one blob, write only
    ({}, "c", "rl"),                                     # a prefetch batch: list + read
])
def test_azcopy_jobs_get_the_narrowest_sas(scope, resource, letters):
    token = _azcopy_sas(**scope)
    assert token["sr"] == resource
    assert sorted(token["sp"]) == sorted(letters)
    assert "d" not in token["sp"] and "a" not in token["sp"]  # never delete or add
    # Minutes, not days: the token is on AzCopy's command line, which local users see.
    assert dt.timedelta(minutes=25) < _lifetime(token) <= dt.timedelta(minutes=30)
    assert "sig" in token and AZURITE_KEY not in "&".join(token.values())
