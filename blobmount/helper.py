"""The mount(8) helper: what lets /etc/fstab and `mount -t fuse.blobmount` mount a config.

mount(8) mounts a `fuse.blobmount` file system by running

    /sbin/mount.fuse.blobmount SOURCE MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]

(`scripts/install` links that name to the `blobmount` program), and fuse3's
mount.fuse, used for fstab's `blobmount#SOURCE ... fuse` form or when that link is
missing, runs `blobmount SOURCE MOUNTPOINT -o OPTIONS`. Both end here: SOURCE is the
config file (`none` or `blobmount`: the default search), and OPTIONS are mapped onto
`blobmount mount`:

- mount(8)'s own bookkeeping is ignored: defaults, rw, auto, noauto, nofail, _netdev,
  user(s), owner, group, x-* (x-systemd.automount ...), comment=..., and the dev, suid
  and exec that mount.fuse adds (blobs are never devices or setuid programs);
- kernel options go through: ro, nosuid, nodev, noexec, noatime, nodiratime, sync,
  dirsync, allow_other, default_permissions;
- so do uid=N, gid=N and umask=OCTAL, which `blobmount mount -o` takes as settings;
- ours: blobmount.user=NAME (the config's {user}), blobmount.log=FILE, blobmount.verbose.

Anything else is refused, unless mount was run with -s (sloppy), which ignores it.
Exit status as mount(8) expects of a helper: 0 mounted, 1 wrong use, 32 mount failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Sequence

from .config import setting_option
from .errors import BlobmountError, HelperUsage

HELPER_NAME = "mount.fuse.blobmount"
FSTYPES = ("fuse.blobmount", "blobmount", "fuse")
DEFAULT_SOURCES = ("none", "blobmount", "")

IGNORED = frozenset({
    "defaults", "rw", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users",
    "owner", "group", "dev", "suid", "exec", "async", "atime", "relatime", "loud", "silent",
})
IGNORED_PREFIXES = ("x-", "X-", "comment=")
KERNEL = frozenset({
    "ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "sync", "dirsync",
    "allow_other", "default_permissions",
})
OURS_WITH_VALUE = {"blobmount.user": "--user", "blobmount.log": "--log-file"}
OURS_FLAGS = {"blobmount.verbose": "-v"}

EXIT_USAGE = 1
EXIT_FAILURE = 32


def is_helper_call(argv: Sequence[str], commands: Collection[str]) -> bool:
    """Whether this process was started as a mount helper rather than as the CLI.

    Either its name is mount.fuse.blobmount, or it was called the way mount.fuse calls
    a file system program: `blobmount SOURCE MOUNTPOINT ...`, SOURCE a file (or `none`)
    and not a command, MOUNTPOINT a folder.
    """
    if os.path.basename(argv[0]).startswith("mount.fuse"):
        return True
    args = list(argv[1:])
    if len(args) < 2 or args[0] in commands or args[0].startswith("-"):
        return False
    source = _strip_type(args[0])
    return (source in DEFAULT_SOURCES or os.path.isfile(source)) and os.path.isdir(args[1])


def _strip_type(source: str) -> str:
    """fstab's `blobmount#CONFIG` form names the program before the '#'."""
    return source.split("#", 1)[1] if source.startswith("blobmount#") else source


def mount_arguments(args: Sequence[str]) -> tuple[list[str], bool]:
    """The `blobmount mount ...` arguments for a helper call, and whether it is fake (-f)."""
    positional: list[str] = []
    option_text: list[str] = []
    sloppy = fake = False
    verbose = 0
    items = iter(args)
    for arg in items:
        if arg == "-o" or arg == "-t" or arg == "-N":
            value = next(items, None)
            if value is None:
                raise HelperUsage(f"{arg} needs a value")
            if arg == "-o":
                option_text.append(value)
            elif arg == "-t":
                _check_type(value)
            else:
                raise HelperUsage("mounting in another namespace (-N) is not supported")
        elif arg.startswith("-o") and len(arg) > 2:
            option_text.append(arg[2:])
        elif arg.startswith("-t") and len(arg) > 2:
            _check_type(arg[2:])
        elif arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("sfnvrw"):
            sloppy |= "s" in arg
            fake |= "f" in arg
            verbose += arg.count("v")
            if "r" in arg:
                option_text.append("ro")
        elif arg.startswith("-"):
            raise HelperUsage(f"unknown argument {arg}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise HelperUsage("usage: mount.fuse.blobmount CONFIG MOUNTPOINT [-o OPTIONS]")
    source, mountpoint = _strip_type(positional[0]), positional[1]
    command = ["mount", os.path.abspath(mountpoint)]
    if source not in DEFAULT_SOURCES:
        command += ["--config", os.path.abspath(source)]
    options, ours = _map_options(",".join(option_text), sloppy)
    if options:
        command += ["-o", ",".join(options)]
    command += ours + ["-v"] * verbose
    return command, fake


def _check_type(value: str) -> None:
    if value not in FSTYPES:
        raise HelperUsage(f"file system type {value!r} is not blobmount's (fuse.blobmount)")


def _map_options(text: str, sloppy: bool) -> tuple[list[str], list[str]]:
    """(`blobmount mount -o` options, other `blobmount mount` arguments) for mount's
    option string."""
    options: list[str] = []
    ours: list[str] = []
    for option in (part.strip() for part in text.split(",")):
        name, has_value, value = option.partition("=")
        if not option or option in IGNORED or option.startswith(IGNORED_PREFIXES):
            continue
        if option in KERNEL or _is_setting(option):
            if option not in options:
                options.append(option)
        elif name in OURS_WITH_VALUE and has_value and value:
            ours += [OURS_WITH_VALUE[name], value]
        elif option in OURS_FLAGS:
            ours.append(OURS_FLAGS[option])
        elif not sloppy:
            raise HelperUsage(
                f"unknown mount option {option!r} (blobmount takes"
                f" {', '.join(sorted(KERNEL))}, uid=N, gid=N, umask=OCTAL,"
                " blobmount.user=NAME, blobmount.log=FILE, blobmount.verbose;"
                " mount -s ignores the rest)")
    return options, ours


def _is_setting(option: str) -> bool:
    """Whether `option` is uid=, gid= or umask=; a bad value is wrong use, even with -s."""
    try:
        return setting_option(option) is not None
    except ValueError as exc:
        raise HelperUsage(f"mount option {option!r}: {exc}") from None


def run(args: Sequence[str], invoke: Callable[[list[str]], object]) -> int:
    """Run a helper call: `invoke` runs the CLI with the translated arguments. A fake
    mount (-f) stops after checking the arguments. Returns the exit status."""
    try:
        command, fake = mount_arguments(args)
    except HelperUsage as exc:
        print(f"blobmount: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if fake:
        return 0
    try:
        invoke(command)
    except BlobmountError as exc:
        print(f"blobmount: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
