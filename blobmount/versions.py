"""The versions of blobmount and of what it runs on, for `blobmount --version`.

Each is asked of the thing itself: the installed packages' metadata, the libfuse that
pyfuse3 is linked to (`fuse_pkgversion()`), and AzCopy's own `--version`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from blobmount.errors import ToolNotFound
from blobmount.tools import find_azcopy

#: The soname pyfuse3 links against (fuse 3.x).
LIBFUSE = "libfuse3.so.3"
#: AzCopy's `--version` answers at once; a hung binary is not worth waiting for.
AZCOPY_VERSION_TIMEOUT = 20.0
#: The Python libraries shown besides pyfuse3, by their distribution names.
PACKAGES = ("trio", "azure-storage-blob")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def libfuse_version() -> str:
    try:
        pkgversion = ctypes.CDLL(LIBFUSE).fuse_pkgversion
    except (OSError, AttributeError) as exc:
        return f"not found ({exc})"
    pkgversion.restype = ctypes.c_char_p
    return pkgversion().decode("ascii", "replace")


def azcopy_version(binary: Path) -> str:
    """What `azcopy --version` says (`10.32.2`); a ToolNotFound when it does not run.

    AzCopy notes its pid under $HOME/.azcopy even for `--version`: it gets a HOME of its
    own, removed afterwards, as its jobs do.
    """
    with tempfile.TemporaryDirectory(prefix="blobmount-azcopy-") as home:
        env = {**os.environ, "HOME": home, "AZCOPY_LOG_LOCATION": home,
               "AZCOPY_JOB_PLAN_LOCATION": home, "AZCOPY_DISABLE_SYSLOG": "true"}
        try:
            result = subprocess.run([str(binary), "--version"], capture_output=True,
                                    text=True, env=env, timeout=AZCOPY_VERSION_TIMEOUT,
                                    stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolNotFound(f"AzCopy {binary} does not run: {exc}") from None
    words = result.stdout.split()
    if result.returncode != 0 or not words:
        problem = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise ToolNotFound(f"AzCopy {binary} does not run: {problem}")
    return words[-1]


def describe(found: list[tuple[str, str]]) -> str:
    """The lines `blobmount --version` prints: `blobmount 0.1.0`, then `- Python: ...`."""
    (_, ours), *rest = found
    return "\n".join([f"blobmount {ours}"] + [f"- {name}: {value}" for name, value in rest])


def versions() -> list[tuple[str, str]]:
    """(name, version) of blobmount, Python, the libraries, libfuse and AzCopy."""
    import blobmount

    found = [("blobmount", blobmount.__version__),
             ("Python", f"{platform.python_version()} ({platform.python_implementation()})")]
    found += [("pyfuse3", package_version("pyfuse3")), ("libfuse", libfuse_version())]
    found += [(name, package_version(name)) for name in PACKAGES]
    try:
        binary = find_azcopy()
        found.append(("AzCopy", f"{azcopy_version(binary)} ({binary})"))
    except ToolNotFound as exc:
        found.append(("AzCopy", f"none ({exc})"))
    return found
