"""The kernel's references to inodes (lookup counts and forget), over `Files` with a
fake remote: a file unlinked while open keeps its node, and so its number, until the
kernel has forgotten it as well as closed it."""

from __future__ import annotations

import errno

import pytest

from blobmount.errors import BlobmountError

from .test_file_life_model import machine


def _unlinked_while_open(state, *, lookups: int) -> tuple[int, int]:
    """x created, handed to the kernel `lookups` more times, unlinked while open; its
    handle and inode."""
    number = state.loop.call(state._create, "x")
    inode = state.life.handles[number].inode
    for _ in range(lookups):
        state.life.looked_up(inode)
    state.loop.call(state.life.write, number, 0, b"kept")
    state.loop.call(state._unlink, "x")
    return number, inode


def _exists(state, inode: int) -> bool:
    try:
        state.loop.sync(lambda: state.namespace.node(inode))
    except BlobmountError as exc:
        assert exc.errno == errno.ENOENT
        return False
    return True


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_unlinked_file_lives_until_closed_and_forgotten(mode: str) -> None:
    with machine(mode) as state:
        number, inode = _unlinked_while_open(state, lookups=2)
        state.loop.call(state._close, number)
        assert _exists(state, inode)  # the kernel may still ask for its attributes
        state.loop.sync(lambda: state.life.forget(inode, 1))
        assert _exists(state, inode)
        state.loop.sync(lambda: state.life.forget(inode, 1))
        assert not _exists(state, inode)
        assert "x" not in state.remote.files()


def test_forgotten_before_its_last_close_it_goes_at_the_close() -> None:
    with machine("sync") as state:
        number, inode = _unlinked_while_open(state, lookups=1)
        state.loop.sync(lambda: state.life.forget(inode, 1))
        assert _exists(state, inode)  # still open
        assert state.loop.call(state.life.read, number, 0, 10) == b"kept"
        state.loop.call(state._close, number)
        assert not _exists(state, inode)


def test_a_new_file_never_takes_a_number_the_kernel_holds() -> None:
    with machine("sync") as state:
        number, inode = _unlinked_while_open(state, lookups=1)
        state.loop.call(state._close, number)
        again = state.loop.call(state._create, "x")
        assert state.life.handles[again].inode != inode
        state.loop.call(state._close, again)
