"""Config placeholders ({user}), secrets read from files, and systemd's cache folder."""

from __future__ import annotations

import base64
import os
import pwd
from pathlib import Path

import pytest
import yaml

from blobmount.config import default_cache_dir, default_variables, load_config, locate
from blobmount.errors import ConfigError

KEY = base64.b64encode(b"template-test-account-key-" + b"t" * 38).decode()
ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BLOBMOUNT_USER", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(locate, "_SYSTEM_CACHE", tmp_path / "var-cache")


def write_config(tmp_path: Path, mounts: list[dict], account: dict | None = None,
                 **top) -> Path:
    document = {
        "accounts": {"main": account or {"account_name": "devstoreaccount1",
                                         "account_key": KEY, "endpoint": ENDPOINT}},
        "mounts": [{"account": "main", **entry} for entry in mounts],
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return str(info.value)


def test_user_placeholder_fills_prefix_folder_container_and_caches(tmp_path):
    path = write_config(
        tmp_path,
        [{"local": "home-{user}", "container": "c-{user}", "remote": "users/{user}/files",
          "cache": str(tmp_path / "cache/{user}/entry")}],
        cache_dir=str(tmp_path / "cache/{user}"))
    config = load_config(path, {"user": "alice"})
    (entry,) = config.mounts
    assert (entry.local, entry.container, entry.prefix) == (
        "home-alice", "c-alice", "users/alice/files/")
    assert entry.cache_dir == tmp_path / "cache/alice/entry"
    assert config.cache_dir == tmp_path / "cache/alice"
    bob = load_config(path, {"user": "bob"}).mounts[0]
    assert bob.prefix == "users/bob/files/"


def test_url_takes_placeholders(tmp_path):
    path = write_config(tmp_path, [{"local": "d", "url": f"{ENDPOINT}/data/users/{{user}}"}])
    del_account = yaml.safe_load(path.read_text())
    del_account["mounts"][0].pop("account")
    path.write_text(yaml.safe_dump(del_account))
    assert load_config(path, {"user": "carol"}).mounts[0].prefix == "users/carol/"


def test_default_user_is_the_variable_then_the_invoking_user(tmp_path, monkeypatch):
    path = write_config(tmp_path, [{"local": "d", "container": "data", "remote": "u/{user}"}])
    me = pwd.getpwuid(os.getuid()).pw_name
    assert default_variables() == {"user": me}
    assert load_config(path).mounts[0].prefix == f"u/{me}/"
    monkeypatch.setenv("BLOBMOUNT_USER", "dave")
    assert load_config(path).mounts[0].prefix == "u/dave/"
    assert default_variables("erin") == {"user": "erin"}


def test_literal_braces_and_keys_without_placeholders(tmp_path):
    path = write_config(tmp_path, [{"local": "d{{x}}", "container": "data",
                                    "remote": "a/{{b}}"}])
    entry = load_config(path, {"user": "alice"}).mounts[0]
    assert (entry.local, entry.prefix) == ("d{x}", "a/{b}/")


@pytest.mark.parametrize("remote, problem", [
    ("users/{usr}", "unknown placeholder {usr}; did you mean {user}?"),
    ("users/{home}", "unknown placeholder {home} (known: {user}"),
    ("users/{user", "a lone '{'"),
    ("users/}", "a lone '}'"),
    ("users/{}", "unknown placeholder {}"),
])
def test_bad_placeholders_name_the_key(tmp_path, remote, problem):
    path = write_config(tmp_path, [{"local": "d", "container": "data", "remote": remote}])
    message = error_of(path, variables={"user": "alice"})
    assert message.startswith(f"{path}: mounts[0].remote: ")
    assert problem in message


@pytest.mark.parametrize("user", ["", "a/b", "..", ".", " alice", "x{y}"])
def test_user_values_that_cannot_be_a_name_are_refused(tmp_path, user):
    path = write_config(tmp_path, [{"local": "d", "container": "data", "remote": "u/{user}"}])
    message = error_of(path, variables={"user": user})
    assert "mounts[0].remote" in message and "--user" in message


def test_placeholders_elsewhere_are_left_alone(tmp_path):
    # Account names and secrets take no placeholders: the value is used as written.
    path = write_config(tmp_path, [{"local": "d", "container": "data"}],
                        account={"account_name": "acct{user}", "account_key": KEY})
    assert "accounts.main.account_name: invalid storage account name" in error_of(path)


def test_secret_from_a_file(tmp_path, monkeypatch):
    key_file = tmp_path / "creds" / "key"
    key_file.parent.mkdir()
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(key_file.parent))
    path = write_config(tmp_path, [{"local": "d", "container": "data"}],
                        account={"account_name": "devstoreaccount1", "endpoint": ENDPOINT,
                                 "account_key_file": "${CREDENTIALS_DIRECTORY}/key"})
    account = load_config(path).mounts[0].account
    assert account.account_key == KEY and not account.use_identity


def test_sas_and_connection_string_files_relative_to_the_config(tmp_path):
    (tmp_path / "sas").write_text("?sv=2022-11-02&sp=rl&sig=abcdefgh%3D")
    path = write_config(tmp_path, [{"local": "d", "container": "data"}],
                        account={"account_name": "devstoreaccount1", "endpoint": ENDPOINT,
                                 "sas_token_file": "sas"})
    assert load_config(path).mounts[0].account.sas_token == "sv=2022-11-02&sp=rl&sig=abcdefgh%3D"
    (tmp_path / "conn").write_text(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
        f"BlobEndpoint={ENDPOINT};")
    path = write_config(tmp_path, [{"local": "d", "container": "data"}],
                        account={"connection_string_file": str(tmp_path / "conn")})
    assert load_config(path).mounts[0].account.account_key == KEY


def test_secret_file_errors(tmp_path):
    account = {"account_name": "devstoreaccount1", "account_key_file": str(tmp_path / "nope")}
    path = write_config(tmp_path, [{"local": "d", "container": "data"}], account=account)
    assert error_of(path) == (f"{path}: accounts.main.account_key_file: no such file:"
                              f" {tmp_path / 'nope'}")
    (tmp_path / "empty").write_text("\n")
    account["account_key_file"] = str(tmp_path / "empty")
    path = write_config(tmp_path, [{"local": "d", "container": "data"}], account=account)
    assert error_of(path).endswith("is empty")
    account["account_key"] = KEY
    path = write_config(tmp_path, [{"local": "d", "container": "data"}], account=account)
    assert "give only one of account_key, account_key_file" in error_of(path)


def test_systemd_cache_directory_is_the_default_cache(tmp_path, monkeypatch):
    assert default_cache_dir() != tmp_path / "systemd-cache"
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'systemd-cache'}:/other")
    assert default_cache_dir() == tmp_path / "systemd-cache"
    path = write_config(tmp_path, [{"local": "d", "container": "data"}])
    assert load_config(path).cache_dir == tmp_path / "systemd-cache"
    monkeypatch.setenv("CACHE_DIRECTORY", "relative")
    assert default_cache_dir() != Path("relative")


@pytest.mark.parametrize("sas, read_only", [
    ("sv=2022-11-02&sp=rl&sig=abcdefgh", True),
    ("sv=2022-11-02&sp=r&sig=abcdefgh", True),
    ("sv=2022-11-02&sp=rlc&sig=abcdefgh", False),
    ("sv=2022-11-02&sp=racwdl&sig=abcdefgh", False),
    ("sv=2022-11-02&si=policy&sig=abcdefgh", False),  # a stored policy: cannot tell
])
def test_a_sas_without_write_makes_entries_read_only_by_default(tmp_path, sas, read_only):
    account = {"account_name": "devstoreaccount1", "endpoint": ENDPOINT, "sas_token": sas}
    path = write_config(tmp_path, [{"local": "d", "container": "data"}], account=account)
    assert load_config(path).mounts[0].read_only is read_only
    # Said in the config, it wins: writes are then tried, and refused with EACCES.
    path = write_config(tmp_path, [{"local": "d", "container": "data", "read_only": False}],
                        account=account)
    assert load_config(path).mounts[0].read_only is False
