"""The handles of open files (files.py): a `Reading` or a `Writing`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .blocks import BlockReader
from .transfers import Filling


@dataclass
class Reading:
    fd: int
    inode: int
    path: Path
    filling: Filling | None = None  # still downloading: reads wait for their bytes
    blocks: BlockReader | None = None  # a large file: reads fetch the blocks they need


@dataclass
class Writing:
    fd: int
    inode: int
    path: Path
    written: bool = False    # changed since it was last journaled
    journaled: bool = False  # journaled at least once through this handle


Handle = Reading | Writing
