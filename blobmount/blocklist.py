"""The block list an edit by blocks commits (patch.py), planned: which bytes keep a
committed block of the version edited as it is, which are sent from the copy here, and
which are copied server-side from its snapshot. Pure functions, and the block IDs.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .blocks import BLOCK, block_start

# How much one block request moves: decide.py says why each.
from .decide import COPY_MAX, FETCH_MAX, PUT_MAX

#: Blocks a blob may have (Azure's limit is 50,000): room is left for written ones.
BLOCKS_MAX = 40_000
#: The most blocks one list may name (Azure's limit).
LIST_MAX = 50_000
#: Length of our block IDs when the blob has none to match.
ID_LENGTH = 22
#: The shortest committed IDs ours can match: a random part and an index (5 digits).
ID_MIN = 16

SEND, COPY, KEEP = "send", "copy", "keep"


@dataclass(frozen=True, slots=True)
class Piece:
    """One block of the list to commit: `length` bytes from `offset`, sent from the
    copy here (SEND), copied from the snapshot (COPY), or a committed block of the
    version edited, kept as it is (KEEP: `name` is its name in the block list)."""

    offset: int
    length: int
    kind: str
    name: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.length


def plan(size: int, limit: int, written: Iterable[int],
         committed: Sequence[tuple[str, int]] = ()) -> list[Piece]:
    """The block list of a file of `size` bytes whose bytes before `limit` are the
    version's except in the `written` blocks. `committed`: that version's block list
    (name, size), if it has one: a block with no written byte, before both ends, is
    kept; the bytes of any other (up to FETCH_MAX) are sent. Otherwise the unchanged
    bytes are copied."""
    written = set(written)
    cut = min(size, limit)
    sent = set(written)  # blocks (BLOCK) whose bytes before the limit are sent
    copy_max = max(COPY_MAX, -(-size // BLOCKS_MAX // BLOCK) * BLOCK)
    pieces: list[Piece] = []
    offset = position = 0
    for name, length in committed:
        start, end = position, position + length
        position = end
        if start >= cut:
            break
        if end <= cut and not any(at in written for at in range(block_start(start), end, BLOCK)):
            pieces += _between(offset, start, limit, sent, copy_max)
            pieces.append(Piece(start, length, KEEP, name))
            offset = end
        elif length <= FETCH_MAX:
            sent.update(range(block_start(start), min(end, cut), BLOCK))
    pieces += _between(offset, size, limit, sent, copy_max)
    if committed and len(pieces) > LIST_MAX:
        return plan(size, limit, written)
    return pieces


def _between(offset: int, end: int, limit: int, sent: set[int], copy_max: int,
             ) -> list[Piece]:
    """The pieces of [offset, end): bytes past the limit, or in a `sent` block, are
    sent; the others copied."""
    pieces: list[Piece] = []
    while offset < end:
        start = block_start(offset)
        kind = COPY if offset < limit and start not in sent else SEND
        stop = min(start + BLOCK, end)
        if kind == COPY:
            stop = min(stop, limit)
        last = pieces[-1] if pieces else None
        if last is not None and last.kind == kind and last.end == offset \
                and last.length + stop - offset <= (copy_max if kind == COPY else PUT_MAX):
            pieces[-1] = Piece(last.offset, last.length + stop - offset, kind)
        else:
            pieces.append(Piece(offset, stop - offset, kind))
        offset = stop
    return pieces


def new_ids(count: int, length: int, taken: Iterable[str] = ()) -> list[str]:
    """`count` block IDs of `length` ASCII characters (length >= ID_MIN): a random
    part, then the index; none named as one of `taken` (block names) is."""
    digits = len(str(max(count - 1, 0)))
    room = length - digits
    taken = set(taken)
    while True:
        prefix = secrets.token_hex(-(-room // 2))[:room]
        ids = [f"{prefix}{index:0{digits}d}" for index in range(count)]
        if taken.isdisjoint(map(block_name, ids)):
            return ids


def block_name(block_id: str) -> str:
    """A block's name in a block list: the base64 of its ID (as the SDK sends it)."""
    return base64.b64encode(block_id.encode()).decode()


def id_length(committed: Sequence[tuple[str, int]]) -> int | None:
    """The length every committed block's ID has, if ours can have it too (None: the
    list is empty, or its IDs differ in length or are too short)."""
    lengths = {len(base64.b64decode(name)) for name, _ in committed}
    if len(lengths) != 1 or min(lengths) < ID_MIN:
        return None
    return lengths.pop()


def fingerprint(names: Sequence[str]) -> str:
    """What names one block list: a blob whose list has it is a commit of that list."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()
