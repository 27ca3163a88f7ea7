"""The log file is private whatever the umask: it names blobs and mount points."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from blobmount.log import make_log_private, setup_logging


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_log_and_its_folder_are_private(tmp_path, open_umask):
    log_file = tmp_path / "state" / "blobmount.log"
    setup_logging(1, log_file)
    logging.getLogger("blobmount.test").info("opened data/secret-plans.txt")
    assert mode(log_file) == 0o600 and mode(log_file.parent) == 0o700
    assert "secret-plans" in log_file.read_text()
    assert "could be read by other users" not in log_file.read_text()


def test_a_log_others_can_read_is_tightened_with_one_line(tmp_path, open_umask):
    log_file = tmp_path / "blobmount.log"
    log_file.write_text("an older line\n")
    log_file.chmod(0o644)
    setup_logging(0, log_file)
    assert mode(log_file) == 0o600
    text = log_file.read_text()
    assert text.startswith("an older line\n")
    assert text.count("could be read by other users (mode 0644): made 0600") == 1


def test_the_cli_only_creates_it_and_leaves_saying_so_to_the_daemon(tmp_path, open_umask):
    log_file = tmp_path / "new.log"
    assert make_log_private(log_file, tighten=False) is None
    assert mode(log_file) == 0o600
    log_file.chmod(0o644)
    assert make_log_private(log_file, tighten=False) is None and mode(log_file) == 0o644
    assert make_log_private(log_file) == 0o644 and mode(log_file) == 0o600


def test_what_is_not_a_regular_file_of_ours_is_left_alone():
    before = mode(Path("/dev/null"))
    assert make_log_private(Path("/dev/null")) is None
    assert mode(Path("/dev/null")) == before
