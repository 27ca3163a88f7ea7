"""The system-wide install that scripts/install makes (as root): /usr/local/bin/blobmount
and mount(8)'s helper /sbin/mount.fuse.blobmount lead to /opt/blobmount/venv, which holds
a copy of the blobmount of whichever checkout ran scripts/install last."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import blobmount

PROGRAM = Path("/usr/local/bin/blobmount")
HELPER = Path("/sbin/mount.fuse.blobmount")
CHECKOUT_PACKAGE = Path(blobmount.__file__).resolve().parent


def _package_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and not path.name.endswith(".pyc")}


def installed_package(program: Path = PROGRAM) -> Path:
    """The blobmount package that `program` runs (its script's interpreter imports it)."""
    with open(program.resolve(), "rb") as script:
        interpreter = script.readline()[2:].decode().strip()
    found = subprocess.run([interpreter, "-I", "-c",
                            "import blobmount, os; print(os.path.dirname(blobmount.__file__))"],
                           capture_output=True, text=True, timeout=60, check=True)
    return Path(found.stdout.strip()).resolve()


def not_this_checkout(program: Path = PROGRAM) -> str | None:
    """Why `program` does not run this checkout's blobmount, or None when it does."""
    if not program.exists():
        return f"{program} is missing"
    try:
        package = installed_package(program)
    except (OSError, UnicodeDecodeError, subprocess.SubprocessError) as exc:
        return f"{program} names no Python that imports blobmount ({exc})"
    ours, theirs = _package_files(CHECKOUT_PACKAGE), _package_files(package)
    differ = sorted((ours ^ theirs) | {name for name in ours & theirs if not filecmp.cmp(
        CHECKOUT_PACKAGE / name, package / name, shallow=False)})
    if differ:
        return (f"{program} runs {package}, not this checkout's blobmount"
                f" ({', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''} differ)")
    return None
