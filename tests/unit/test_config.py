"""Tests for blobmount.config: both file formats, URL and connection-string forms,
defaults, where config files are found, and that every error is one line that names
the file and the key and never shows a secret."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from blobmount import config as cfg
from blobmount.config import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    GiB,
    KiB,
    MiB,
    Settings,
    default_cache_dir,
    embedded_config,
    find_config,
    load_config,
    locate,
    parse_size,
)
from blobmount.errors import ConfigError
from blobmount.log import redact

# Distinctive fake secrets, so a test can tell whether one leaked into a message.
KEY = base64.b64encode(b"blobmount-test-account-key-" + b"k" * 37).decode()
KEY2 = base64.b64encode(b"second-test-key-" + b"q" * 48).decode()
SIG = "SiGnAtUrEvAlUe%2Bw0rth%3D"
SAS = f"sv=2022-11-02&ss=b&srt=co&sp=racwdl&se=2030-01-01T00%3A00%3A00Z&sig={SIG}"
AZURITE = "http://127.0.0.1:10000/devstoreaccount1"
SECRETS = (KEY[:40], KEY2[:40], SAS, SIG, "SiGnAtUrEvAlUe")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh HOME, no config-related variables, a non-root user, a harmless /etc."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "BLOBMOUNT_CONFIG",
        "AZFUSE_CLOUD_FUSE_CONFIG_FILE",
        "AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(locate, "_SYSTEM_CONFIG", tmp_path / "etc" / "config.yaml")
    monkeypatch.setattr(locate, "_SYSTEM_CACHE", tmp_path / "var-cache")
    return home


def write(path: Path, content: Any) -> Path:
    """Write `content` to `path`: a str as dedented text, anything else as YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(content) if isinstance(content, str) else yaml.safe_dump(content)
    path.write_text(text)
    return path


def load(tmp_path: Path, content: Any) -> cfg.Config:
    return load_config(write(tmp_path / "config.yaml", content))


def config_error(path: Path) -> str:
    """The message of the ConfigError that loading `path` raises, checked for the basics."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    for secret in SECRETS:
        assert secret not in message
    return message


def minimal(**mount: Any) -> dict[str, Any]:
    """A native config with one key account and one mount (overridable)."""
    return {
        "accounts": {"main": {"account_name": "myaccount", "account_key": KEY}},
        "mounts": [{"local": "data", "account": "main", "container": "research", **mount}],
    }


# --------------------------------------------------------------------------- native format


def test_native_full_example(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        f"""
        cache_dir: {tmp_path}/cache
        listing_ttl: 5
        sdk_download_max: 64MiB
        max_parallel_transfers: 4
        remote_timeout: 12.5
        accounts:
          main:
            account_name: devstoreaccount1
            account_key: "{KEY}"
            endpoint: {AZURITE}/
          shared:
            account_name: otheraccount
            sas_token: "?{SAS}"
        mounts:
          - local: datasets
            account: main
            container: research
            remote: datasets
            cache: {tmp_path}/elsewhere/datasets
            read_only: true
            upload: sync
          - local: team/scratch
            account: shared
            container: scratch-01
            remote: u/alice/
            upload: async
        """,
    )
    assert c.source == str(tmp_path / "config.yaml")
    assert c.cache_dir == tmp_path / "cache"
    assert c.settings == Settings(
        listing_ttl=5.0, sdk_download_max=64 * MiB, max_parallel_transfers=4, remote_timeout=12.5
    )
    main, shared = c.accounts["main"], c.accounts["shared"]
    assert main == cfg.Account(
        name="main", account_name="devstoreaccount1", endpoint=AZURITE, account_key=KEY
    )
    assert shared.sas_token == SAS
    assert shared.endpoint == "https://otheraccount.blob.core.windows.net"
    assert not main.use_identity and not shared.use_identity
    first, second = c.mounts
    assert first == cfg.MountEntry(
        local="datasets",
        account=main,
        container="research",
        prefix="datasets/",
        cache_dir=tmp_path / "elsewhere" / "datasets",
        read_only=True,
        upload="sync",
    )
    assert (second.local, second.account, second.container, second.prefix) == (
        "team/scratch",
        shared,
        "scratch-01",
        "u/alice/",
    )
    assert second.cache_dir == tmp_path / "cache" / "team__scratch"
    assert (second.read_only, second.upload) == (False, "async")
    assert set(c.secrets()) >= {KEY, SAS, SIG}


def test_defaults(tmp_path: Path, isolated: Path) -> None:
    c = load(tmp_path, minimal())
    assert c.settings == Settings()
    assert c.settings.sdk_download_max == 1024 * MiB
    assert c.settings.read_ahead_kb == 1024
    assert c.cache_dir == isolated / ".cache" / "blobmount"
    (mount,) = c.mounts
    assert mount.prefix == ""
    assert mount.cache_dir == c.cache_dir / "data"
    assert (mount.read_only, mount.upload) == (False, "sync")
    account = c.accounts["main"]
    assert account.endpoint == "https://myaccount.blob.core.windows.net"


def test_account_without_credentials_uses_identity(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        {
            "accounts": {"prod": {"account_name": "prodacct"}},
            "mounts": [{"local": "x", "account": "prod", "container": "data"}],
        },
    )
    account = c.accounts["prod"]
    assert account.use_identity
    assert (account.account_key, account.sas_token, account.connection_string) == (None,) * 3
    assert account.secrets() == ()


@pytest.mark.parametrize(
    ("remote", "prefix"),
    [
        (None, ""),
        ("", ""),
        ("/", ""),
        ("datasets", "datasets/"),
        ("datasets/", "datasets/"),
        ("/datasets/", "datasets/"),
        ("a/b c/d", "a/b c/d/"),
    ],
)
def test_remote_becomes_prefix(tmp_path: Path, remote: str | None, prefix: str) -> None:
    assert load(tmp_path, minimal(remote=remote)).mounts[0].prefix == prefix


def test_local_is_stored_without_slashes(tmp_path: Path) -> None:
    c = load(tmp_path, minimal(local="/a/b/"))
    assert c.mounts[0].local == "a/b"
    assert c.mounts[0].cache_dir == c.cache_dir / "a__b"


def test_cache_paths_expand_user(tmp_path: Path, isolated: Path) -> None:
    config = minimal(cache="~/mycache/data")
    config["cache_dir"] = "~/cache-root"
    c = load(tmp_path, config)
    assert c.cache_dir == isolated / "cache-root"
    assert c.mounts[0].cache_dir == isolated / "mycache" / "data"


def test_special_containers(tmp_path: Path) -> None:
    assert load(tmp_path, minimal(container="$root")).mounts[0].container == "$root"


def test_listing_ttl_zero_is_allowed(tmp_path: Path) -> None:
    config = minimal()
    config["listing_ttl"] = 0
    assert load(tmp_path, config).settings.listing_ttl == 0.0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("32MiB", 32 * MiB),
        ("1GiB", GiB),
        ("512KiB", 512 * KiB),
        ("100MB", 100_000_000),
        ("1.5GiB", 3 * GiB // 2),
        ("2 MiB", 2 * MiB),
        ("8M", 8 * MiB),
        ("4096", 4096),
        ("10b", 10),
        (1234, 1234),
        (0, 0),
    ],
)
def test_size_strings(tmp_path: Path, text: str | int, size: int) -> None:
    assert parse_size(text) == size
    config = minimal()
    config["sdk_download_max"] = text
    assert load(tmp_path, config).settings.sdk_download_max == size


@pytest.mark.parametrize("text", ["32 megs", "MiB", "-1", "1e6", "", True, 1.5, -5])
def test_bad_sizes(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    c = load(tmp_path, minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.cache_dir = Path("/")  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.accounts["x"] = c.accounts["main"]  # type: ignore[index]


def test_repr_hides_secrets(tmp_path: Path) -> None:
    c = load(tmp_path, minimal())
    assert KEY not in repr(c)


# --------------------------------------------------------------------------- url forms


def test_https_url_uses_the_configured_account(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        {
            "accounts": {"main": {"account_name": "myaccount", "account_key": KEY}},
            "mounts": [
                {"local": "d", "url": "https://myaccount.blob.core.windows.net/research/data/v1"}
            ],
        },
    )
    (mount,) = c.mounts
    assert (mount.account, mount.container, mount.prefix) == (
        c.accounts["main"],
        "research",
        "data/v1/",
    )


def test_https_url_without_account_makes_an_identity_account(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        {
            "mounts": [
                {"local": "a", "url": "https://publicdata.blob.core.windows.net/sets"},
                {"local": "b", "url": "https://publicdata.blob.core.windows.net/sets/x/"},
            ]
        },
    )
    account = c.accounts["publicdata"]
    assert account == cfg.Account(
        name="publicdata",
        account_name="publicdata",
        endpoint="https://publicdata.blob.core.windows.net",
        use_identity=True,
    )
    assert [(m.account, m.container, m.prefix) for m in c.mounts] == [
        (account, "sets", ""),
        (account, "sets", "x/"),
    ]


def test_az_url(tmp_path: Path) -> None:
    config = minimal()
    config["mounts"] = [
        {"local": "known", "url": "az://myaccount/research/a/b"},
        {"local": "implicit", "url": "az://someoneelse/stuff"},
    ]
    c = load(tmp_path, config)
    known, implicit = c.mounts
    assert (known.account.name, known.container, known.prefix) == ("main", "research", "a/b/")
    assert implicit.account.use_identity
    assert implicit.account.endpoint == "https://someoneelse.blob.core.windows.net"
    assert (implicit.container, implicit.prefix) == ("stuff", "")


def test_url_under_a_configured_endpoint(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        {
            "accounts": {
                "local": {
                    "account_name": AZURITE_ACCOUNT,
                    "account_key": AZURITE_KEY,
                    "endpoint": AZURITE,
                }
            },
            "mounts": [
                {"local": "a", "url": f"{AZURITE}/research/some%20dir/"},
                {"local": "b", "url": f"{AZURITE}/models"},
            ],
        },
    )
    a, b = c.mounts
    assert (a.account.name, a.container, a.prefix) == ("local", "research", "some dir/")
    assert (b.account.name, b.container, b.prefix) == ("local", "models", "")
    assert list(c.accounts) == ["local"]


# --------------------------------------------------------------------------- credentials


def account_config(**account: Any) -> dict[str, Any]:
    return {
        "accounts": {"main": account},
        "mounts": [{"local": "d", "account": "main", "container": "research"}],
    }


def test_connection_string_with_account_name_and_suffix(tmp_path: Path) -> None:
    conn = (
        f"DefaultEndpointsProtocol=https;AccountName=prodacct;AccountKey={KEY};"
        "EndpointSuffix=core.chinacloudapi.cn"
    )
    account = load(tmp_path, account_config(connection_string=conn)).accounts["main"]
    assert account.account_name == "prodacct"
    assert account.endpoint == "https://prodacct.blob.core.chinacloudapi.cn"
    assert (account.account_key, account.connection_string) == (KEY, conn)
    assert not account.use_identity
    assert set(account.secrets()) == {KEY, conn}


def test_connection_string_defaults_to_azure_public_cloud(tmp_path: Path) -> None:
    conn = f"AccountName=prodacct;AccountKey={KEY}"
    account = load(tmp_path, account_config(connection_string=conn)).accounts["main"]
    assert account.endpoint == "https://prodacct.blob.core.windows.net"


def test_connection_string_with_blob_endpoint(tmp_path: Path) -> None:
    conn = f"DefaultEndpointsProtocol=http;AccountKey={KEY};BlobEndpoint={AZURITE}/;"
    account = load(tmp_path, account_config(connection_string=conn)).accounts["main"]
    assert (account.account_name, account.endpoint) == (AZURITE_ACCOUNT, AZURITE)


def test_connection_string_with_sas(tmp_path: Path) -> None:
    conn = f"BlobEndpoint=https://prodacct.blob.core.windows.net;SharedAccessSignature={SAS}"
    account = load(tmp_path, account_config(connection_string=conn)).accounts["main"]
    assert account.account_name == "prodacct"
    assert (account.sas_token, account.account_key) == (SAS, None)
    assert {SAS, SIG} <= set(account.secrets())


def test_use_development_storage(tmp_path: Path) -> None:
    config = account_config(connection_string="UseDevelopmentStorage=true")
    account = load(tmp_path, config).accounts["main"]
    assert account.account_name == AZURITE_ACCOUNT
    assert account.endpoint == AZURITE
    assert account.account_key == AZURITE_KEY


def test_connection_string_may_repeat_its_account_name(tmp_path: Path) -> None:
    conn = f"AccountName=prodacct;AccountKey={KEY}"
    config = account_config(connection_string=conn, account_name="prodacct")
    assert load(tmp_path, config).accounts["main"].account_name == "prodacct"


@pytest.mark.parametrize("token", [SAS, "?" + SAS])
def test_sas_token_with_or_without_question_mark(tmp_path: Path, token: str) -> None:
    account = load(tmp_path, account_config(account_name="myaccount", sas_token=token))
    assert account.accounts["main"].sas_token == SAS
    assert SIG in account.accounts["main"].secrets()


# --------------------------------------------------------------------------- secrets


def test_secrets_are_registered_for_redaction(tmp_path: Path) -> None:
    key = base64.b64encode(b"registered-key-" * 4).decode()
    sig = "RegisteredSignature%2Babc"
    conn_key = base64.b64encode(b"conn-string-key-" * 4).decode()
    conn = f"AccountName=connacct;AccountKey={conn_key}"
    load(
        tmp_path,
        {
            "accounts": {
                "a": {"account_name": "keyacct", "account_key": key},
                "b": {"account_name": "sasacct", "sas_token": f"?sv=1&sp=r&sig={sig}"},
                "c": {"connection_string": conn},
            },
            "mounts": [{"local": "d", "account": "a", "container": "research"}],
        },
    )
    for secret in (key, sig, conn, conn_key):
        assert secret not in redact(f"the secret is {secret} here")


def test_invalid_secret_is_registered_before_the_error(tmp_path: Path) -> None:
    bad_key = "this is not base64 but still secret!"
    path = write(tmp_path / "c.yaml", account_config(account_name="myaccount", account_key=bad_key))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert bad_key not in str(info.value)
    assert bad_key not in redact(f"leak: {bad_key}")


# --------------------------------------------------------------------------- default cache dir


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    assert default_cache_dir() == isolated / ".cache" / "blobmount"
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg/cache")
    assert default_cache_dir() == Path("/xdg/cache/blobmount")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == isolated / ".cache" / "blobmount"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_dir() == locate._SYSTEM_CACHE


# --------------------------------------------------------------------------- find_config


@pytest.fixture
def all_configs(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """One config in every place find_config looks."""
    paths = {
        "explicit": write(tmp_path / "explicit.yaml", minimal()),
        "env": write(tmp_path / "env.yaml", minimal()),
        "user": write(isolated / ".config" / "blobmount" / "config.yaml", minimal()),
        "azfuse": write(tmp_path / "azfuse.yaml", []),
    }
    monkeypatch.setenv("BLOBMOUNT_CONFIG", str(paths["env"]))
    monkeypatch.setenv("AZFUSE_CLOUD_FUSE_CONFIG_FILE", str(paths["azfuse"]))
    return paths


def test_find_config_precedence(
    all_configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_config(all_configs["explicit"]) == all_configs["explicit"]
    assert find_config(str(all_configs["explicit"])) == all_configs["explicit"]
    assert find_config(None) == all_configs["env"]
    monkeypatch.delenv("BLOBMOUNT_CONFIG")
    assert find_config(None) == all_configs["user"]
    all_configs["user"].unlink()
    assert find_config(None) == all_configs["azfuse"]
    monkeypatch.delenv("AZFUSE_CLOUD_FUSE_CONFIG_FILE")
    assert find_config(None) is None


def test_find_config_honours_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "xdg" / "blobmount" / "config.yaml", minimal())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert find_config(None) == path


def test_find_config_as_root_uses_the_system_file(
    all_configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLOBMOUNT_CONFIG")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert find_config(None) == all_configs["azfuse"]  # the user's file is not root's
    system = write(locate._SYSTEM_CONFIG, minimal())
    assert find_config(None) == system


@pytest.mark.parametrize("variable", [None, "BLOBMOUNT_CONFIG", "AZFUSE_CLOUD_FUSE_CONFIG_FILE"])
def test_find_config_named_file_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    missing = tmp_path / "missing.yaml"
    if variable:
        monkeypatch.setenv(variable, str(missing))
    with pytest.raises(ConfigError) as info:
        find_config(None if variable else missing)
    assert str(info.value) == f"{missing}: no such file"


# --------------------------------------------------------------------------- azfuse format


def azfuse_files(folder: Path, cache_root: str) -> Path:
    """An azfuse config with two entries on one account and one on another."""
    write(
        folder / "mystorage.yaml",
        {
            "account_name": "myaccount",
            "account_key": KEY,
            "sas_token": None,
            "container_name": "research",
        },
    )
    write(
        folder / "other.yaml",
        {
            "account_name": "otheraccount",
            "account_key": None,
            "sas_token": "?" + SAS,
            "container_name": "models",
        },
    )
    return write(
        folder.parent / "azfuse.yaml",
        [
            {"local": "data", "remote": "azfuse_data", "cache": f"{cache_root}/data",
             "storage_account": "mystorage"},
            {"local": "models", "remote": "models", "cache": f"{cache_root}/models",
             "storage_account": "other"},
            {"local": "more", "remote": "", "cache": f"{cache_root}/more",
             "storage_account": "mystorage"},
        ],
    )  # fmt: skip


def test_azfuse_format_with_folder_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    folder = tmp_path / "accounts"
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(folder))
    c = load_config(azfuse_files(folder, "/tmp/azfuse"))
    assert c.cache_dir == isolated / ".cache" / "blobmount"
    assert c.settings == Settings()
    assert set(c.accounts) == {"mystorage", "other"}
    mystorage, other = c.accounts["mystorage"], c.accounts["other"]
    assert mystorage.account_name == "myaccount"
    assert mystorage.account_key == KEY and mystorage.sas_token is None
    assert mystorage.endpoint == "https://myaccount.blob.core.windows.net"
    assert other.sas_token == SAS and other.account_key is None
    assert [(m.local, m.account, m.container, m.prefix, m.cache_dir) for m in c.mounts] == [
        ("data", mystorage, "research", "azfuse_data/", Path("/tmp/azfuse/data")),
        ("models", other, "models", "models/", Path("/tmp/azfuse/models")),
        ("more", mystorage, "research", "", Path("/tmp/azfuse/more")),
    ]
    assert all((m.read_only, m.upload) == (False, "sync") for m in c.mounts)


def test_azfuse_default_folder_is_relative_to_the_current_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "project"
    path = azfuse_files(workdir / "aux_data" / "storage_account", "relative-cache")
    monkeypatch.chdir(workdir)
    c = load_config(path)
    assert c.mounts[0].account.account_key == KEY
    assert c.mounts[0].cache_dir == workdir / "relative-cache" / "data"


def test_azfuse_account_endpoint_and_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(tmp_path))
    write(
        tmp_path / "emu.yaml",
        {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
         "container_name": "research", "endpoint": AZURITE},
    )  # fmt: skip
    write(tmp_path / "idn.yaml", {"account_name": "prodacct", "container_name": "data"})
    c = load_config(
        write(
            tmp_path / "azfuse.yaml",
            [
                {"local": "a", "remote": "x", "storage_account": "emu"},
                {"local": "b", "remote": "y", "storage_account": "idn", "cache_lock": True},
            ],
        )
    )
    a, b = c.mounts
    assert a.account.endpoint == AZURITE and not a.account.use_identity
    assert b.account.use_identity
    assert a.cache_dir == c.cache_dir / "a"  # no `cache:` -> under the default cache dir


def test_azfuse_unknown_keys_are_ignored_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(tmp_path))
    write(
        tmp_path / "acc.yaml",
        {"account_name": "myaccount", "account_key": KEY, "container_name": "data", "x": 1},
    )
    path = write(tmp_path / "a.yaml", [{"local": "a", "storage_account": "acc", "colour": 1}])
    with caplog.at_level(logging.WARNING, logger="blobmount.config"):
        load_config(path)
    assert "[0].colour: unknown key" in caplog.text
    assert "acc.yaml: x: unknown key" in caplog.text


def test_azfuse_missing_account_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(tmp_path / "accs"))
    path = write(tmp_path / "a.yaml", [{"local": "a", "storage_account": "nope"}])
    message = config_error(path)
    assert message.startswith(f"{tmp_path / 'accs' / 'nope.yaml'}: no such file")
    assert str(path) in message and "[0]" in message


@pytest.mark.parametrize(
    ("account", "key", "problem"),
    [
        ({"account_name": "myaccount", "account_key": "not base64!!"}, "account_key", "base64"),
        ({"account_name": "myaccount", "account_key": KEY}, "container_name", "missing"),
        ({"account_key": KEY, "container_name": "data"}, "account_name", "missing"),
        ({"account_name": "myaccount", "sas_token": "?sv=1", "container_name": "data"},
         "sas_token", "sig="),
        ({"account_name": "myaccount", "container_name": "Data"}, "container_name", "invalid"),
    ],
)  # fmt: skip
def test_azfuse_account_file_errors_name_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, account: dict, key: str, problem: str
) -> None:
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(tmp_path))
    account_file = write(tmp_path / "acc.yaml", account)
    message = config_error(write(tmp_path / "a.yaml", [{"local": "a", "storage_account": "acc"}]))
    assert message.startswith(f"{account_file}: {key}: ")
    assert problem in message


@pytest.mark.parametrize(
    ("items", "key", "problem"),
    [
        ([], "", "empty list"),
        ([{"storage_account": "acc"}], "[0].local", "missing"),
        ([{"local": "a"}], "[0].storage_account", "missing"),
        (["a"], "[0]", "expected a mapping"),
        ([{"local": "a", "storage_account": "acc"}, {"local": "a", "storage_account": "acc"}],
         "[1].local", "also [0].local"),
        ([{"local": "a", "storage_account": "acc", "remote": "x//y"}], "[0].remote", "empty"),
    ],
)  # fmt: skip
def test_azfuse_list_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items: list, key: str, problem: str
) -> None:
    monkeypatch.setenv("AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER", str(tmp_path))
    write(tmp_path / "acc.yaml", {"account_name": "myaccount", "container_name": "data"})
    path = write(tmp_path / "a.yaml", items)
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert problem in message


# --------------------------------------------------------------------------- native errors

DELETE = object()


def apply(config: dict[str, Any], changes: list[tuple[tuple, Any]]) -> dict[str, Any]:
    """Set (or DELETE) each path in `config`; a path one past a list's end appends."""
    for path, value in changes:
        target: Any = config
        for part in path[:-1]:
            target = target[part]
        last = path[-1]
        if value is DELETE:
            del target[last]
        elif isinstance(target, list) and last == len(target):
            target.append(value)
        else:
            target[last] = value
    return config


def mount(**fields: Any) -> dict[str, Any]:
    return {"local": "other", "account": "main", "container": "research", **fields}


M0 = ("mounts", 0)
ACC = ("accounts", "main")
ERROR_CASES = [
    # missing keys, wrong types, unknown keys
    ([(("mounts",), DELETE)], "mounts", "missing"),
    ([(("mounts",), {"a": 1})], "mounts", "expected a list, got a mapping"),
    ([(("mounts",), [])], "mounts", "empty"),
    ([((*M0,), "data")], "mounts[0]", "expected a mapping, got a string"),
    ([((*M0, "container"), DELETE)], "mounts[0].container", "missing"),
    ([((*M0, "local"), DELETE)], "mounts[0].local", "missing"),
    ([((*M0, "account"), DELETE)], "mounts[0].account", "missing"),
    ([((*M0, "container"), 123)], "mounts[0].container", "expected a string, got an integer"),
    ([((*M0, "read_only"), "yes")], "mounts[0].read_only", "expected true or false"),
    ([(("mount",), [])], "mount", "unknown key (did you mean 'mounts'?)"),
    ([((*M0, "contianer"), "x")], "mounts[0].contianer", "did you mean 'container'?"),
    ([((*M0, "zzz"), "x")], "mounts[0].zzz", "unknown key (known keys: local, account"),
    ([((*ACC, "acount_key"), KEY)], "accounts.main.acount_key", "did you mean 'account_key'?"),
    ([(("accounts",), ["main"])], "accounts", "expected a mapping"),
    ([(ACC, "myaccount")], "accounts.main", "expected a mapping, got a string"),
    # accounts
    ([((*M0, "account"), "mian")], "mounts[0].account", "unknown account 'mian' (did you mean"),
    ([((*ACC, "account_name"), DELETE)], "accounts.main.account_name", "missing"),
    ([((*ACC, "account_name"), "My_Account")], "accounts.main.account_name", "invalid"),
    ([((*ACC, "account_key"), "not base64!")], "accounts.main.account_key", "not valid base64"),
    ([((*ACC, "account_key"), "")], "accounts.main.account_key", "empty"),
    ([((*ACC, "sas_token"), SAS)], "accounts.main.sas_token", "only one of account_key"),
    ([((*ACC, "sas_token"), "?sv=2022&sp=r"), ((*ACC, "account_key"), DELETE)],
     "accounts.main.sas_token", "no sig= parameter"),
    ([((*ACC, "endpoint"), "127.0.0.1:10000")], "accounts.main.endpoint", "http"),
    ([((*ACC, "endpoint"), f"https://myaccount.blob.core.windows.net/?{SAS}")],
     "accounts.main.endpoint", "must not contain '?'"),
    ([((*ACC, "connection_string"), f"AccountName=x;AccountKey={KEY}")],
     "accounts.main.connection_string", "only one of account_key, connection_string"),
    ([((*ACC, "connection_string"), f"AccountName=myaccount;{KEY.rstrip('=')}"),
      ((*ACC, "account_key"), DELETE)], "accounts.main.connection_string", "malformed"),
    ([((*ACC, "connection_string"), "AccountName=prodacct;AccountKey=bad key!"),
      ((*ACC, "account_key"), DELETE)], "accounts.main.connection_string", "AccountKey: not valid"),
    ([((*ACC, "connection_string"), f"AccountKey={KEY}"), ((*ACC, "account_key"), DELETE)],
     "accounts.main.connection_string", "neither AccountName nor BlobEndpoint"),
    ([((*ACC, "connection_string"), f"AccountName=prodacct;AccountKey={KEY}"),
      ((*ACC, "account_key"), DELETE)], "accounts.main.account_name", "differs"),
    # mount entries
    ([((*M0, "container"), "Research")], "mounts[0].container", "invalid container name"),
    ([((*M0, "container"), "ab")], "mounts[0].container", "invalid container name"),
    ([((*M0, "container"), "a--b")], "mounts[0].container", "invalid container name"),
    ([((*M0, "container"), "-abc")], "mounts[0].container", "invalid container name"),
    ([((*M0, "container"), "x" * 64)], "mounts[0].container", "invalid container name"),
    ([((*M0, "local"), "")], "mounts[0].local", "empty"),
    ([((*M0, "local"), "/")], "mounts[0].local", "empty"),
    ([((*M0, "local"), "a//b")], "mounts[0].local", "empty name"),
    ([((*M0, "local"), "..")], "mounts[0].local", "'..'"),
    ([((*M0, "local"), "a/./b")], "mounts[0].local", "'.'"),
    ([((*M0, "local"), "a\0b")], "mounts[0].local", "NUL"),
    ([((*M0, "local"), "é" * 128)], "mounts[0].local", "longer than 255 bytes"),
    ([((*M0, "remote"), "a//b")], "mounts[0].remote", "empty name"),
    ([(("mounts", 1), mount(local="data"))], "mounts[1].local", "also mounts[0].local"),
    ([(("mounts", 1), mount(local="data/sub"))], "mounts[1].local", "inside mounts[0].local"),
    ([(("mounts", 1), mount(local="da")), (("mounts", 2), mount(local="da/x"))],
     "mounts[2].local", "inside mounts[1].local"),
    ([((*M0, "local"), "data/sub"), (("mounts", 1), mount(local="data"))],
     "mounts[1].local", "contains mounts[0].local"),
    ([((*M0, "upload"), "later")], "mounts[0].upload", "must be sync or async"),
    ([((*M0, "cache"), "relative/cache")], "mounts[0].cache", "absolute path"),
    ([((*M0, "cache"), "/c/x"), (("mounts", 1), mount(cache="/c/x/y"))],
     "mounts[1].cache", "overlaps mounts[0].cache"),
    # urls
    ([((*M0, "url"), "az://myaccount/research")], "mounts[0].account", "either url or account"),
    ([(M0, {"local": "d", "url": f"https://myaccount.blob.core.windows.net/c0?{SAS}"})],
     "mounts[0].url", "must not contain '?'"),
    ([(M0, {"local": "d", "url": "http://127.0.0.1:9999/acct/c0"})], "mounts[0].url",
     "not a blob URL"),
    ([(M0, {"local": "d", "url": "az://myaccount"})], "mounts[0].url", "names no container"),
    ([(M0, {"local": "d", "url": "az://myaccount/BAD"})], "mounts[0].url", "invalid container"),
    ([(("accounts", "twin"), {"account_name": "myaccount"}),
      (M0, {"local": "d", "url": "az://myaccount/research"})],
     "mounts[0].url", "several accounts (main, twin)"),
    # settings
    ([(("listing_ttl",), -1)], "listing_ttl", "must be >= 0"),
    ([(("listing_ttl",), "fast")], "listing_ttl", "expected a number, got a string"),
    ([(("listing_ttl",), True)], "listing_ttl", "expected a number, got a boolean"),
    ([(("remote_timeout",), 0)], "remote_timeout", "must be > 0"),
    ([(("max_parallel_transfers",), 0)], "max_parallel_transfers", "must be >= 1"),
    ([(("max_parallel_transfers",), 1.5)], "max_parallel_transfers", "expected an integer"),
    ([(("sdk_download_max",), "32 megs")], "sdk_download_max", "bad size '32 megs'"),
    ([(("cache_dir",), "cache")], "cache_dir", "absolute path"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "key", "problem"), ERROR_CASES)
def test_native_errors(tmp_path: Path, changes: list, key: str, problem: str) -> None:
    path = write(tmp_path / "bad.yaml", apply(minimal(), changes))
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: ")
    assert problem in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ("# only a comment\n", "empty file"),
        ("just a string\n", "expected a mapping (blobmount format) or a list (azfuse format)"),
        ("mounts: [\n", "YAML syntax error at line 2"),
        (f"accounts:\n  main:\n    account_key: {KEY}\n   bad: [\n", "YAML syntax error at line"),
        (f"accounts:\n  main: {{account_key: '{KEY}}}\n", "YAML syntax error at line"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_unreadable_files(tmp_path: Path) -> None:
    assert config_error(tmp_path / "missing.yaml").endswith("missing.yaml: no such file")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert config_error(folder) == f"{folder}: is a folder, not a file"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert config_error(binary) == f"{binary}: cannot read: not UTF-8 text"


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "c.yaml", minimal())

    def refuse(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)  # chmod 0 does not stop root
    assert config_error(path) == f"{path}: cannot read: permission denied"


# --------------------------------------------------------------------------- embedded default


def test_embedded_config(isolated: Path) -> None:
    c = embedded_config(AZURITE + "/")
    assert c.source == "<embedded default>"
    assert c.cache_dir == isolated / ".cache" / "blobmount"
    assert c.settings == Settings()
    account = c.accounts["local"]
    assert (account.account_name, account.account_key, account.endpoint) == (
        AZURITE_ACCOUNT,
        AZURITE_KEY,
        AZURITE,
    )
    (mount,) = c.mounts
    assert (mount.local, mount.account, mount.container, mount.prefix) == (
        "blobmount",
        account,
        "blobmount",
        "",
    )
    assert mount.cache_dir == c.cache_dir / "blobmount"
    assert AZURITE_KEY not in redact(AZURITE_KEY)


def test_embedded_config_with_cache_dir(tmp_path: Path) -> None:
    c = embedded_config("http://127.0.0.1:12345/devstoreaccount1", tmp_path / "cache")
    assert c.cache_dir == tmp_path / "cache"
    assert c.mounts[0].cache_dir == tmp_path / "cache" / "blobmount"
    assert c.accounts["local"].endpoint == "http://127.0.0.1:12345/devstoreaccount1"


def test_embedded_config_rejects_a_bad_endpoint() -> None:
    with pytest.raises(ConfigError, match=r"^<embedded default>: endpoint: expected an http"):
        embedded_config("127.0.0.1:10000")
