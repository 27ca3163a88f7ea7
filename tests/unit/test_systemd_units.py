"""Every systemd unit in systemd/ passes `systemd-analyze verify` without a warning, and
says what the README promises (Type=notify, unmount at stop, no secrets in Environment=)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = sorted(UNITS_DIR.glob("*.service"))
BINARY = Path("/usr/local/bin/blobmount")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (Debian: systemd)")


def verify(unit: Path, unit_path: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of one unit file; drop-ins are looked for in unit_path."""
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_path}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, env=env, timeout=60)


def instance_copy(unit: Path, folder: Path, instance: str = "datasets") -> Path:
    """The unit as systemd sees one instance of it: blobmount@datasets.service."""
    name = unit.name.replace("@.", f"@{instance}.") if "@." in unit.name else unit.name
    copy = folder / name
    shutil.copy(unit, copy)
    return copy


def read_unit(unit: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",),
                                          comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(unit)
    return parser


def test_there_are_units():
    assert [unit.name for unit in UNITS] == ["blobmount@.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_verify_is_clean(unit, tmp_path):
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"{BINARY} is missing (scripts/install links it); verify checks ExecStart")
    for target in (unit, instance_copy(unit, tmp_path)):
        result = verify(target, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_is_clean_with_the_credentials_drop_in(tmp_path):
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"{BINARY} is missing (scripts/install links it); verify checks ExecStart")
    unit = instance_copy(UNITS_DIR / "blobmount@.service", tmp_path)
    drop_in = tmp_path / f"{unit.name}.d"
    drop_in.mkdir()
    shutil.copy(UNITS_DIR / "credentials.conf.example", drop_in / "credentials.conf")
    result = verify(unit, tmp_path)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_verify_catches_mistakes(tmp_path):
    """The check is worth something: a wrong key or value is reported."""
    text = (UNITS_DIR / "blobmount@.service").read_text()
    broken = tmp_path / "broken@.service"
    broken.write_text(text.replace("Type=notify", "Type=notifyy\nRestartt=always"))
    result = verify(broken, tmp_path)
    assert "notifyy" in result.stderr and "Restartt" in result.stderr


def test_the_template_says_what_the_readme_promises():
    unit = read_unit(UNITS_DIR / "blobmount@.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    exec_start = service["ExecStart"].split()
    assert exec_start[:3] == [str(BINARY), "mount", "/mnt/%i"]
    assert "--foreground" in exec_start and "/etc/blobmount/%i.yaml" in exec_start
    assert service["ExecStop"].split()[:3] == [f"-{BINARY}", "unmount", "/mnt/%i"]
    assert service["CacheDirectory"] == "blobmount/%i"
    # Secrets never go through the environment, and the mount must reach the host.
    text = (UNITS_DIR / "blobmount@.service").read_text()
    active = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("Environment") for line in active)
    for isolating in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateMounts"):
        assert not any(line.startswith(isolating) for line in active)
