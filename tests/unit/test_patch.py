"""The block list an edit by blocks commits (patch.plan)."""

from blobmount.blocks import BLOCK
from blobmount.patch import COPY_MAX, PUT_MAX, Piece, plan

MiB = 1024 * 1024


def _covers(pieces: list[Piece], size: int) -> None:
    offset = 0
    for piece in pieces:
        assert piece.offset == offset and piece.length > 0
        offset += piece.length
    assert offset == size


def test_an_edit_in_the_middle_is_one_block_between_two_copies():
    size = 300 * MiB + 5
    pieces = plan(size, size, {BLOCK * 300})
    _covers(pieces, size)
    sent = [piece for piece in pieces if not piece.copy]
    assert sent == [Piece(BLOCK * 300, BLOCK, False)]
    assert all(piece.length <= COPY_MAX for piece in pieces if piece.copy)


def test_an_append_sends_only_the_bytes_past_the_old_end():
    old = 10 * MiB + 100
    size = old + 9 * MiB
    pieces = plan(size, old, set())
    _covers(pieces, size)
    copied = [piece for piece in pieces if piece.copy]
    sent = [piece for piece in pieces if not piece.copy]
    # The old last block is copied up to the old end; only what is past it is sent.
    assert pieces[:len(copied)] == copied and copied[-1].offset + copied[-1].length == old
    assert sent[0].offset == old and all(piece.length <= PUT_MAX for piece in sent)
    assert all(piece.length <= COPY_MAX for piece in copied)


def test_a_written_last_block_goes_whole_and_nothing_past_a_truncate_is_copied():
    assert plan(BLOCK * 3 + 10, BLOCK * 3 + 10, {BLOCK * 3}) == [
        Piece(0, BLOCK * 3, True), Piece(BLOCK * 3, 10, False)]
    # Truncated to 2 blocks, then grown again: the bytes past the truncate are ours.
    assert plan(BLOCK * 4, BLOCK * 2, set()) == [Piece(0, BLOCK * 2, True),
                                                  Piece(BLOCK * 2, BLOCK * 2, False)]
    assert plan(0, 0, set()) == []
