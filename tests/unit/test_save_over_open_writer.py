"""A save by rename (async upload) over a file still open for writing whose last
change went up: the saved file replaces the version that upload made, no conflict.
Found by the file-life property test (test_file_life_model.py) on other examples."""

from __future__ import annotations

import os

from .test_file_life_model import machine


def test_a_save_over_a_file_open_for_writing_replaces_its_last_upload() -> None:
    with machine("async") as state:
        state.remote.put_elsewhere("x", b"seed")
        writer = state.loop.call(state._open, "x", os.O_RDWR | os.O_TRUNC)
        state.loop.call(state.life.write, writer, 0, b"mine")
        state.loop.call(state.life.fsync, writer)  # journaled ...
        assert state.loop.call(state._sync) == []  # ... and up, under the open writer
        assert state.remote.files()["x"].data == b"mine"
        saved = state.loop.call(state._create, "x.tmp")
        state.loop.call(state.life.write, saved, 0, b"saved")
        state.loop.call(state._close, saved)
        state.loop.call(state._rename, "x.tmp", "x")
        assert state.loop.call(state._sync) == []
        state.loop.call(state._close, writer)
        assert state.loop.call(state._sync) == []
        assert {name: blob.data for name, blob in state.remote.files().items()} == {
            "x": b"saved"}
