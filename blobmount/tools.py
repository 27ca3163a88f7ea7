"""Where the helper programs are: AzCopy (transfers) and Azurite (the emulator for tests).

Each is looked for in the same order: an environment variable naming the program, then the
`PATH`, then a `tools/` folder that `scripts/install` fills from npm: the one next to the
virtualenv running blobmount (a checkout's `.venv` and `tools/`, or the system-wide
`/opt/blobmount/venv` and `/opt/blobmount/tools`), then the project's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from blobmount.errors import ToolNotFound

#: The project's `tools/` folder (next to the `blobmount` package in a source checkout).
PROJECT_TOOLS: Path = Path(__file__).resolve().parent.parent / "tools"
#: The `tools/` folder next to the virtualenv running blobmount, if it runs in one.
VENV_TOOLS: Path | None = (Path(sys.prefix).parent / "tools"
                           if sys.prefix != sys.base_prefix else None)

_AZCOPY_IN_TOOLS = Path("node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64")
_AZURITE_IN_TOOLS = Path("node_modules/.bin/azurite-blob")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _find(what: str, env_var: str, command: str, in_tools: Path) -> Path:
    named = os.environ.get(env_var)
    if named:
        path = Path(named).expanduser()
        if _is_executable(path):
            return path
        raise ToolNotFound(f"{what}: ${env_var} is {named}, which is not an executable file")
    on_path = shutil.which(command)
    if on_path:
        return Path(on_path)
    folders = [folder for folder in (VENV_TOOLS, PROJECT_TOOLS) if folder is not None]
    for bundled in (folder / in_tools for folder in folders):
        if _is_executable(bundled):
            return bundled
    for bundled in (folder / in_tools for folder in folders):
        if bundled.is_file():
            raise ToolNotFound(f"{what}: {bundled} is not executable: run scripts/install")
    raise ToolNotFound(
        f"{what} not found: run scripts/install, put `{command}` on PATH or set ${env_var}"
    )


def find_azcopy() -> Path:
    """AzCopy: `$BLOBMOUNT_AZCOPY`, else `azcopy` on PATH, else the copy in `tools/`."""
    return _find("AzCopy", "BLOBMOUNT_AZCOPY", "azcopy", _AZCOPY_IN_TOOLS)


def find_azurite() -> Path:
    """Azurite's blob service: `$BLOBMOUNT_AZURITE`, else `azurite-blob` on PATH, else `tools/`."""
    return _find("Azurite", "BLOBMOUNT_AZURITE", "azurite-blob", _AZURITE_IN_TOOLS)
