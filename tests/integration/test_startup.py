"""A start that cannot succeed: one line on stderr, a non-zero exit, nothing left behind.

Each case runs `blobmount mount` as a user would and checks the same promises: exit
code not 0; stderr exactly one `blobmount: ...` line (no traceback, no permission
warning: configs are 0600); a config error names the file and the key; nothing is
mounted at the mount point afterwards and no daemon of this test is left running; no
account key in stderr or the log; and the answer comes quickly, never a hang.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest
import yaml
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from blobmount.azurite import free_port
from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import Mount, blobmount, pid_alive, wait_for
from .procs import daemons, kill_everything, one_error_line, processes

pytestmark = pytest.mark.integration

# A well-formed account key (base64, 64 bytes) that Azurite rejects.
WRONG_KEY = base64.b64encode(bytes(range(100, 164))).decode()
# Every case must answer well within this, or it counts as a hang.
TIMEOUT = 60.0


def mount_count(path: Path) -> int:
    with open("/proc/self/mounts") as mounts:
        return sum(line.split(" ")[1] == str(path) for line in mounts)


@dataclass
class Setup:
    """What one case starts from, and what its error line must say."""

    config: Path
    mountpoint: Path
    expect: list[str]
    secrets: tuple[str, ...] = (AZURITE_KEY,)
    #: a mount made first, on this or another mount point, that must survive untouched
    first: Mount | None = None
    #: mount entries at the mount point that were there before and stay (dead or live)
    mounted_before: int = 0
    extra: list[str] = field(default_factory=list)


@dataclass
class Context:
    tmp_path: Path
    mounter: object
    container: str
    endpoint: str

    def document(self, key: str = AZURITE_KEY, endpoint: str | None = None,
                 sas: str | None = None, **entry: object) -> dict:
        mount = {"local": "d", "account": "az", "container": self.container, **entry}
        credential = {"sas_token": sas} if sas else {"account_key": key}
        return {
            "cache_dir": str(self.tmp_path / "cache"),
            "accounts": {"az": {"account_name": AZURITE_ACCOUNT, **credential,
                                "endpoint": endpoint or self.endpoint}},
            "mounts": [{k: v for k, v in mount.items() if v is not None}],
        }

    def write(self, content: dict | str, name: str = "config.yaml") -> Path:
        path = self.tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        path.chmod(0o600)
        return path

    def empty_mountpoint(self) -> Path:
        path = self.tmp_path / "mnt"
        path.mkdir(exist_ok=True)
        return path


def yaml_syntax_error(ctx: Context) -> Setup:
    # The broken line holds the key: the message must point at it without quoting it.
    text = (f"cache_dir: {ctx.tmp_path / 'cache'}\n"
            "accounts:\n"
            "  az:\n"
            f"    account_name: {AZURITE_ACCOUNT}\n"
            f"    account_key: \"{AZURITE_KEY}\n"
            f"    endpoint: {ctx.endpoint}\n"
            "mounts:\n"
            f"  - {{local: d, account: az, container: {ctx.container}}}\n")
    config = ctx.write(text)
    return Setup(config, ctx.empty_mountpoint(), [str(config), "YAML syntax error", "line"])


def unknown_key(ctx: Context) -> Setup:
    config = ctx.write(ctx.document(contaner="typo"))
    return Setup(config, ctx.empty_mountpoint(),
                 [str(config), "mounts[0].contaner", "unknown key", "container"])


def missing_container(ctx: Context) -> Setup:
    config = ctx.write(ctx.document(container=None))
    return Setup(config, ctx.empty_mountpoint(), [str(config), "mounts[0].container", "missing"])


def unknown_account(ctx: Context) -> Setup:
    config = ctx.write(ctx.document(account="nosuch"))
    return Setup(config, ctx.empty_mountpoint(),
                 [str(config), "mounts[0].account", "unknown account 'nosuch'"])


def wrong_account_key(ctx: Context) -> Setup:
    config = ctx.write(ctx.document(key=WRONG_KEY))
    return Setup(config, ctx.empty_mountpoint(),
                 ["'d'", ctx.container, "access denied (AuthorizationFailure)"],
                 secrets=(WRONG_KEY,))


def wrong_sas_token(ctx: Context) -> Setup:
    sas = generate_container_sas(
        AZURITE_ACCOUNT, ctx.container, account_key=WRONG_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    signature = parse_qs(sas)["sig"][0]
    config = ctx.write(ctx.document(sas=sas))
    return Setup(config, ctx.empty_mountpoint(), ["'d'", ctx.container, "access denied"],
                 secrets=(sas, signature, quote(signature, safe="")))


def unreachable_account(ctx: Context) -> Setup:
    closed = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    config = ctx.write(ctx.document(endpoint=closed))
    return Setup(config, ctx.empty_mountpoint(), ["'d'", "cannot reach the account"])


def container_does_not_exist(ctx: Context) -> Setup:
    name = f"missing{uuid.uuid4().hex[:12]}"
    config = ctx.write(ctx.document(container=name))
    return Setup(config, ctx.empty_mountpoint(), ["'d'", name, "not found"])


def mountpoint_missing(ctx: Context) -> Setup:
    config = ctx.write(ctx.document())
    absent = ctx.tmp_path / "absent"
    return Setup(config, absent, [str(absent), "does not exist"])


def mountpoint_is_a_file(ctx: Context) -> Setup:
    config = ctx.write(ctx.document())
    file = ctx.tmp_path / "a-file"
    file.write_text("not a folder")
    return Setup(config, file, [str(file), "not a folder"])


def mountpoint_not_empty(ctx: Context) -> Setup:
    config = ctx.write(ctx.document())
    mountpoint = ctx.empty_mountpoint()
    (mountpoint / "already-here.txt").write_text("keep me")
    return Setup(config, mountpoint, [str(mountpoint), "not empty"])


def mountpoint_already_mounted(ctx: Context) -> Setup:
    config = ctx.write(ctx.document())
    first = ctx.mounter.mount(config, ctx.empty_mountpoint())
    return Setup(config, first.mountpoint, [str(first.mountpoint), "already mounted"],
                 first=first, mounted_before=1)


def mountpoint_dead(ctx: Context) -> Setup:
    """A daemon that was killed leaves a mount whose every access fails (ENOTCONN)."""
    config = ctx.write(ctx.document())
    first = ctx.mounter.mount(config, ctx.empty_mountpoint())
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(first.pid), timeout=10, what="the killed daemon to go")
    return Setup(config, first.mountpoint, [str(first.mountpoint), "fusermount3 -u"],
                 mounted_before=1)


def two_daemons_one_cache(ctx: Context) -> Setup:
    config = ctx.write(ctx.document())
    first = ctx.mounter.mount(config, ctx.tmp_path / "first")
    return Setup(config, ctx.empty_mountpoint(),
                 [str(ctx.tmp_path / "cache"), "in use", f"pid {first.pid}"], first=first)


CASES: list[Callable[[Context], Setup]] = [
    yaml_syntax_error, unknown_key, missing_container, unknown_account, wrong_account_key,
    wrong_sas_token,
    unreachable_account, container_does_not_exist, mountpoint_missing, mountpoint_is_a_file,
    mountpoint_not_empty, mountpoint_already_mounted, mountpoint_dead, two_daemons_one_cache,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_start_fails_with_one_line_and_leaves_nothing(case, tmp_path, mounter, azurite,
                                                      container):
    ctx = Context(tmp_path, mounter, container.container_name, azurite.endpoint)
    log_file = tmp_path / "startup.log"
    setup = None
    try:
        setup = case(ctx)
        started = time.monotonic()
        result = blobmount("mount", str(setup.mountpoint), "--config", str(setup.config),
                           "--log-file", str(log_file), "-vv", timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        line = one_error_line(result)
        for expected in setup.expect:
            assert expected in line, f"{expected!r} not in {line!r}"
        # Each case fails on its first check, without a timeout: the slowest, a refused
        # connection, takes three tries and two waits (at most 2.25 s) after Python's
        # start. 20 s is that with a margin for a loaded machine, and still well short
        # of one call's bound with the default remote_timeout (about 32 s).
        assert elapsed < 20, f"took {elapsed:.1f} s to fail"
        assert result.stdout == ""

        assert mount_count(setup.mountpoint) == setup.mounted_before
        allowed = {setup.first.pid} if setup.first else set()
        wait_for(lambda: set(daemons(tmp_path)) <= allowed, timeout=5,
                 what="no daemon of the failed start to be left")
        status = blobmount("status", str(setup.mountpoint), timeout=TIMEOUT)
        if setup.first is None or setup.first.mountpoint != setup.mountpoint:
            one_error_line(status)

        logs = [log_file, mounter.tmp_path / "blobmount.log"]
        text = result.stderr + "".join(p.read_text() for p in logs if p.exists())
        for secret in setup.secrets:
            assert secret not in text
        assert AZURITE_KEY not in text
        assert "Traceback" not in text

        if setup.first is not None:
            # The failed start did not disturb the mount that was there first.
            assert os.listdir(setup.first.mountpoint) == ["d"]
            assert setup.first.status()["pid"] == setup.first.pid
    except BaseException:
        kill_everything(tmp_path, tmp_path / "mnt", tmp_path / "first")
        mounter.cleanup()
        raise
    else:
        if setup.first is not None:
            mounter.unmount(setup.first)
        mounter.cleanup()  # a dead mount is detached here
        assert not daemons(tmp_path)


def _sigint_as_a_terminal_gives_it() -> None:
    """In the CLI's child, before exec: SIGINT unblocked and at its default, whatever the
    suite's process inherited or set (a full run once left the CLI deaf to it)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as status:
            return " ".join(line.strip() for line in status
                            if line.startswith(("State", "SigPnd", "ShdPnd", "SigBlk",
                                                "SigIgn", "SigCgt")))
    except OSError as exc:
        return str(exc)


def test_interrupted_start_mounts_nothing(tmp_path, mounter, container):
    """Ctrl-C while `blobmount mount` waits: one line, and the daemon gives up the mount."""
    config = mounter.config([{"local": "d", "container": container.container_name}])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log_file = tmp_path / "startup.log"
    cli = subprocess.Popen(
        [sys.executable, "-m", "blobmount", "mount", str(mountpoint), "--config", str(config),
         "--log-file", str(log_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_a_terminal_gives_it)
    try:
        # Hold the daemon still as soon as it exists, so the interrupt surely comes first.
        # (Its command line says --foreground once it runs: before that it is a fork of
        # the CLI, and stopping it would stop the CLI's Popen too.)
        daemon = wait_for(lambda: [pid for pid, argv in processes(tmp_path)
                                   if "--foreground" in argv],
                          timeout=20, interval=0.005, what="the daemon to start")[0]
        os.kill(daemon, signal.SIGSTOP)
        cli.send_signal(signal.SIGINT)
        try:
            stdout, stderr = cli.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the CLI did not end on SIGINT: {_signal_state(cli.pid)}"
                                 ) from None
        os.kill(daemon, signal.SIGCONT)
        line = one_error_line(subprocess.CompletedProcess(cli.args, cli.returncode, stdout,
                                                          stderr))
        assert "interrupted" in line
        wait_for(lambda: not pid_alive(daemon), timeout=20, what="the daemon to give up")
        assert mount_count(mountpoint) == 0
        log = log_file.read_text()
        assert "Traceback" not in log
        assert "interrupted" in log
    except BaseException:
        if cli.poll() is None:
            cli.kill()
        kill_everything(tmp_path, mountpoint)
        raise
