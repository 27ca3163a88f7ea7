"""What a new user reaches for first: `--version`, shell completion, the licence, the
changelog, and one version everywhere. Each runs the real `blobmount` command."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml
from click.testing import CliRunner

import blobmount
from blobmount.cli import cli
from blobmount.config import AZURITE_KEY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blobmount", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def setup_cfg_version() -> str:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["metadata"]["version"]


def test_one_version_everywhere():
    version = setup_cfg_version()
    assert metadata.version("blobmount") == version
    assert blobmount.__version__ == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    # Keep a Changelog: Unreleased on top, then the newest release, which is this one.
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert headings[:2] == ["Unreleased", version]


def test_licence_file_and_metadata():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 The"
                                                     " blobmount authors\n")
    assert metadata.metadata("blobmount")["License"] == "MIT"


def test_version_names_what_blobmount_runs_on():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"blobmount {blobmount.__version__}"
    named = dict(line[2:].split(": ", 1) for line in lines[1:])
    assert list(named) == ["Python", "pyfuse3", "libfuse", "trio", "azure-storage-blob",
                           "AzCopy"]
    assert named["Python"].startswith(".".join(map(str, sys.version_info[:3])))
    for package in ("pyfuse3", "trio", "azure-storage-blob"):
        assert named[package] == metadata.version(package)
    assert re.fullmatch(r"3\.\d+\.\d+", named["libfuse"])
    assert re.match(r"10\.\d+\.\d+ \(/", named["AzCopy"]), named["AzCopy"]


def test_version_without_azcopy_says_so(tmp_path):
    result = run("--version", env={"BLOBMOUNT_AZCOPY": str(tmp_path / "absent")})
    assert result.returncode == 0
    assert f"- AzCopy: none (AzCopy: $BLOBMOUNT_AZCOPY is {tmp_path / 'absent'}" in result.stdout


def test_bash_completion_offers_the_subcommands():
    """The script `_BLOBMOUNT_COMPLETE=bash_source blobmount` prints, sourced in bash and
    asked as bash asks it, offers every command, a group's subcommands and options."""
    script = ('eval "$(_BLOBMOUNT_COMPLETE=bash_source blobmount)"\n'
              'ask() { COMP_WORDS=(blobmount "$@"); COMP_CWORD=$#; COMPREPLY=()\n'
              '        _blobmount_completion blobmount; echo "${COMPREPLY[*]}"; }\n'
              'ask ""; ask cache ""; ask mount --d\n')
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    commands, cache, options = [line.split() for line in result.stdout.splitlines()]
    assert commands == sorted(cli.commands)
    assert {"check", "mount", "status", "unmount", "cache", "prefetch"} <= set(commands)
    assert cache == ["clear", "evict", "ls"]
    assert options == ["--dry-run"]


def test_zsh_and_fish_completion_offer_the_subcommands():
    """click's protocols for the other two shells (run in this process: bash's test
    above runs the installed command)."""

    def complete(shell: str, words: str, cword: str) -> list[str]:
        result = CliRunner().invoke(cli, prog_name="blobmount", env={
            "_BLOBMOUNT_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
            "COMP_CWORD": cword})
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    # zsh: type, value, help, three lines per candidate.
    assert complete("zsh", "blobmount ", "1")[1::3] == sorted(cli.commands)
    assert [line.split("\t")[0] for line in complete("fish", "blobmount cache ", "")] == [
        "plain,clear", "plain,evict", "plain,ls"]
    for shell in ("zsh", "fish"):
        source = CliRunner().invoke(cli, prog_name="blobmount",
                                    env={"_BLOBMOUNT_COMPLETE": f"{shell}_source"})
        assert "_BLOBMOUNT_COMPLETE" in source.output and source.exit_code == 0


def test_sas_json(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"accounts": {"main": {
        "account_name": "acct", "account_key": AZURITE_KEY}},
        "mounts": [{"local": "d", "account": "main", "container": "data"}]}))
    config.chmod(0o600)
    result = CliRunner().invoke(cli, ["sas", "--config", str(config), "--container", "data",
                                      "--expiry", "2999-01-01T00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.output)
    assert reply["account"] == "acct" and reply["container"] == "data"
    assert reply["expiry"] == "2999-01-01T00:00:00+00:00" and reply["permissions"] == "rl"
    assert "se=2999-01-01T00%3A00%3A00Z" in reply["token"]
