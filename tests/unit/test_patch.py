"""The block list an edit by blocks commits (blocklist.plan), and its block IDs."""

import base64

from blobmount import blocklist
from blobmount.blocklist import (
    COPY,
    COPY_MAX,
    KEEP,
    LIST_MAX,
    PUT_MAX,
    SEND,
    Piece,
    block_name,
    id_length,
    new_ids,
    plan,
)
from blobmount.blocks import BLOCK

MiB = 1024 * 1024


def _covers(pieces: list[Piece], size: int) -> None:
    offset = 0
    for piece in pieces:
        assert piece.offset == offset and piece.length > 0
        offset += piece.length
    assert offset == size


def _committed(*sizes: int) -> list[tuple[str, int]]:
    """A version's block list: names as the service gives them, of 36-byte IDs."""
    return [(block_name(f"{index:036d}"), size) for index, size in enumerate(sizes)]


def _kinds(pieces: list[Piece]) -> list[tuple[str, int, int]]:
    return [(piece.kind, piece.offset, piece.length) for piece in pieces]


# -- a blob put in one request (no block list): the unchanged bytes are copied --------

def test_an_edit_in_the_middle_is_one_block_between_two_copies():
    size = 300 * MiB + 5
    pieces = plan(size, size, {BLOCK * 300})
    _covers(pieces, size)
    sent = [piece for piece in pieces if piece.kind != COPY]
    assert sent == [Piece(BLOCK * 300, BLOCK, SEND)]
    assert all(piece.length <= COPY_MAX for piece in pieces if piece.kind == COPY)


def test_an_append_sends_only_the_bytes_past_the_old_end():
    old = 10 * MiB + 100
    size = old + 9 * MiB
    pieces = plan(size, old, set())
    _covers(pieces, size)
    copied = [piece for piece in pieces if piece.kind == COPY]
    sent = [piece for piece in pieces if piece.kind == SEND]
    # The old last block is copied up to the old end; only what is past it is sent.
    assert pieces[:len(copied)] == copied and copied[-1].end == old
    assert sent[0].offset == old and all(piece.length <= PUT_MAX for piece in sent)
    assert all(piece.length <= COPY_MAX for piece in copied)


def test_a_written_last_block_goes_whole_and_nothing_past_a_truncate_is_copied():
    assert plan(BLOCK * 3 + 10, BLOCK * 3 + 10, {BLOCK * 3}) == [
        Piece(0, BLOCK * 3, COPY), Piece(BLOCK * 3, 10, SEND)]
    # Truncated to 2 blocks, then grown again: the bytes past the truncate are ours.
    assert plan(BLOCK * 4, BLOCK * 2, set()) == [Piece(0, BLOCK * 2, COPY),
                                                  Piece(BLOCK * 2, BLOCK * 2, SEND)]
    assert plan(0, 0, set()) == []


# -- a version with a block list: its untouched blocks are kept as they are ----------

def test_an_edit_keeps_every_committed_block_but_the_one_it_falls_in():
    committed = _committed(*[4 * MiB] * 5)
    size = 20 * MiB
    pieces = plan(size, size, {10 * MiB}, committed)
    _covers(pieces, size)
    assert _kinds(pieces) == [(KEEP, 0, 4 * MiB), (KEEP, 4 * MiB, 4 * MiB),
                              (SEND, 8 * MiB, 4 * MiB),  # its block, sent again whole
                              (KEEP, 12 * MiB, 4 * MiB), (KEEP, 16 * MiB, 4 * MiB)]
    kept = [piece.name for piece in pieces if piece.kind == KEEP]
    assert kept == [name for index, (name, _) in enumerate(committed) if index != 2]


def test_a_write_across_two_committed_blocks_sends_both():
    committed = _committed(*[4 * MiB] * 5)
    size = 20 * MiB
    written = {8 * MiB - BLOCK, 8 * MiB}  # the end of block 1, the start of block 2
    assert _kinds(plan(size, size, written, committed)) == [
        (KEEP, 0, 4 * MiB), (SEND, 4 * MiB, 4 * MiB), (SEND, 8 * MiB, 4 * MiB),
        (KEEP, 12 * MiB, 4 * MiB), (KEEP, 16 * MiB, 4 * MiB)]


def test_blocks_off_the_block_grid_are_kept_or_sent_by_their_own_bytes():
    # Committed blocks of 3 MiB: block 1 is [3, 6) MiB; a write in [5.5, 6) touches it.
    committed = _committed(3 * MiB, 3 * MiB, 3 * MiB)
    pieces = plan(9 * MiB, 9 * MiB, {6 * MiB - BLOCK}, committed)
    assert _kinds(pieces) == [(KEEP, 0, 3 * MiB), (SEND, 3 * MiB, 3 * MiB),
                              (KEEP, 6 * MiB, 3 * MiB)]


def test_an_append_keeps_every_block_and_sends_the_new_bytes():
    committed = _committed(*[4 * MiB] * 5)
    old = 20 * MiB
    # The append's block is past the old end: marked written, no committed block's.
    pieces = plan(old + MiB, old, {old, old + BLOCK}, committed)
    assert _kinds(pieces) == [*((KEEP, 4 * MiB * index, 4 * MiB) for index in range(5)),
                              (SEND, old, MiB)]
    # A short last block that the append's first block covers goes again, with it.
    committed = _committed(4 * MiB, 4 * MiB, 100)
    old = 8 * MiB + 100
    pieces = plan(old + MiB, old, {8 * MiB, 8 * MiB + BLOCK}, committed)
    assert _kinds(pieces) == [(KEEP, 0, 4 * MiB), (KEEP, 4 * MiB, 4 * MiB),
                              (SEND, 8 * MiB, MiB + 100)]


def test_a_truncate_keeps_the_blocks_before_it_and_sends_the_one_it_cuts():
    committed = _committed(*[4 * MiB] * 5)
    cut = 10 * MiB + 5
    assert _kinds(plan(cut, cut, {10 * MiB}, committed)) == [
        (KEEP, 0, 4 * MiB), (KEEP, 4 * MiB, 4 * MiB), (SEND, 8 * MiB, 2 * MiB + 5)]
    # On a block's edge: nothing at all is sent.
    assert _kinds(plan(8 * MiB, 8 * MiB, set(), committed)) == [
        (KEEP, 0, 4 * MiB), (KEEP, 4 * MiB, 4 * MiB)]
    # Truncated, then grown again: the bytes past the truncate are ours, not kept.
    assert _kinds(plan(14 * MiB, cut, {10 * MiB}, committed)) == [
        (KEEP, 0, 4 * MiB), (KEEP, 4 * MiB, 4 * MiB), (SEND, 8 * MiB, 4 * MiB),
        (SEND, 12 * MiB, 2 * MiB)]


def test_a_committed_block_too_large_to_fetch_has_its_unchanged_bytes_copied():
    size = blocklist.FETCH_MAX * 2
    pieces = plan(size, size, {BLOCK * 10}, _committed(size))
    _covers(pieces, size)
    assert [piece for piece in pieces if piece.kind != COPY] == [
        Piece(BLOCK * 10, BLOCK, SEND)]


def test_a_list_that_would_name_too_many_blocks_is_planned_without_them():
    committed = _committed(*[BLOCK] * LIST_MAX)
    size = BLOCK * LIST_MAX
    assert all(piece.kind == KEEP for piece in plan(size, size, set(), committed))
    # One block more than a list may name: today's plan, copies and all.
    pieces = plan(size + 1, size, set(), committed)
    assert {piece.kind for piece in pieces} == {COPY, SEND}
    _covers(pieces, size + 1)


# -- block IDs ------------------------------------------------------------------------

def test_new_ids_have_the_committed_ones_length_and_are_unique():
    committed = _committed(1, 2, 3)
    length = id_length(committed)
    assert length == 36
    ids = new_ids(1200, length, (name for name, _ in committed))
    assert len(set(ids)) == 1200 and {len(block_id) for block_id in ids} == {36}
    assert all(len(base64.b64decode(block_name(block_id))) == 36 for block_id in ids)
    # AzCopy's IDs are raw bytes, not text: what counts is their length in bytes.
    raw = base64.b64encode(b"00000" + bytes(range(200, 216)) + b"0" * 15).decode()
    assert id_length([(raw, 1)]) == 36


def test_ids_of_another_length_or_too_short_cannot_be_matched():
    assert id_length([]) is None  # put in one request: no list
    mixed = [(block_name("a" * 20), 1), (block_name("b" * 24), 1)]
    assert id_length(mixed) is None
    assert id_length([(block_name("a" * (blocklist.ID_MIN - 1)), 1)]) is None
    assert id_length([(block_name("a" * blocklist.ID_MIN), 1)]) == blocklist.ID_MIN


def test_a_new_id_named_as_a_committed_block_is_drawn_again(monkeypatch):
    draws = iter(["aa" * 32, "bb" * 32])
    monkeypatch.setattr(blocklist.secrets, "token_hex", lambda _count: next(draws))
    taken = [block_name("a" * 15 + "1")]
    assert new_ids(2, 16, taken) == ["b" * 15 + "0", "b" * 15 + "1"]
