"""The cache settings of the config: limits at the top and per entry, and copies on
/dev/shm dropped after upload by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from blobmount.config import GiB, MiB, load_config
from blobmount.errors import ConfigError

KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"


def config(tmp_path: Path, top: dict[str, Any] | None = None, **mount: Any):
    document = {
        "cache_dir": str(tmp_path / "cache"),
        "accounts": {"main": {"account_name": "myaccount", "account_key": KEY}},
        "mounts": [{"local": "data", "account": "main", "container": "research", **mount},
                   {"local": "other", "account": "main", "container": "research"}],
        **(top or {}),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


def test_no_limits_by_default(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    assert loaded.settings.cache_max_bytes is None
    assert loaded.settings.cache_low_watermark == 0.8
    first = loaded.mounts[0]
    assert (first.cache_max_bytes, first.cache_max_age, first.drop_after_upload) == (
        None, None, False)


def test_top_level_limits_apply_to_every_entry_and_an_entry_may_override(tmp_path: Path):
    loaded = config(tmp_path, {"cache_max_bytes": "2GiB", "cache_max_age": 3600,
                               "cache_low_watermark": 0.5},
                    cache_max_bytes="100MiB", cache_max_age=60)
    first, second = loaded.mounts
    assert (first.cache_max_bytes, first.cache_max_age) == (100 * MiB, 60.0)
    assert (second.cache_max_bytes, second.cache_max_age) == (2 * GiB, 3600.0)
    assert loaded.settings.cache_low_watermark == 0.5


def test_a_cache_on_dev_shm_drops_uploaded_copies_unless_told(tmp_path: Path) -> None:
    assert config(tmp_path, cache="/dev/shm/blobmount-x").mounts[0].drop_after_upload
    kept = config(tmp_path, cache="/dev/shm/blobmount-x", drop_after_upload=False)
    assert not kept.mounts[0].drop_after_upload
    assert config(tmp_path, drop_after_upload=True).mounts[0].drop_after_upload


@pytest.mark.parametrize(("top", "mount", "where"), [
    ({"cache_max_bytes": 0}, {}, "cache_max_bytes: must be more than 0 bytes"),
    ({"cache_max_bytes": "lots"}, {}, "cache_max_bytes: bad size"),
    ({}, {"cache_max_age": 0}, "mounts[0].cache_max_age: must be > 0"),
    ({"cache_low_watermark": 1.5}, {}, "cache_low_watermark: must be a fraction"),
    ({}, {"drop_after_upload": "yes"}, "mounts[0].drop_after_upload: expected true or false"),
])
def test_bad_values_name_the_key(tmp_path: Path, top, mount, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, top, **mount)
    assert where in str(caught.value)
