"""One sqlite transaction on an autocommitting connection, and the store's blocks that
must commit together or not at all (each on a real database file under tmp_path)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blobmount.patchtables import Patch
from blobmount.store import Store
from blobmount.transaction import statements, transaction


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    connection.execute("CREATE TABLE t (x INTEGER)")
    return connection


def rows(db: sqlite3.Connection) -> list[int]:
    return [x for (x,) in db.execute("SELECT x FROM t ORDER BY x")]


def test_the_blocks_statements_commit_together(db: sqlite3.Connection) -> None:
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        assert db.in_transaction  # `with db:` would have committed the insert already
        db.execute("INSERT INTO t VALUES (2)")
    assert not db.in_transaction
    assert rows(db) == [1, 2]


def test_a_failure_inside_commits_none_of_them(db: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError), transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("the disk is full")
    assert rows(db) == []
    assert not db.in_transaction


def test_a_block_inside_another_is_part_of_it(db: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError), transaction(db):
        with transaction(db):
            db.execute("INSERT INTO t VALUES (1)")
        assert db.in_transaction  # the inner block did not commit
        raise RuntimeError
    assert rows(db) == []


def test_a_script_splits_into_its_statements() -> None:
    script = ("-- a comment; with a semicolon\nCREATE TABLE a (x TEXT DEFAULT ';');\n"
              "CREATE TABLE b (y);  -- after it\n\n")
    assert [part.strip() for part in statements(script)] == [
        "-- a comment; with a semicolon\nCREATE TABLE a (x TEXT DEFAULT ';');",
        "CREATE TABLE b (y);  -- after it"]


def test_the_schema_made_statement_by_statement_is_the_whole_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    tables = {name for (name,) in store._db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    store.close()
    assert {"uploads", "cached_files", "cached_blocks", "patches", "patch_blocks",
            "meta"} <= tables


def test_a_row_and_its_blocks_go_together_or_not_at_all(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """drop_patch deletes a patch's blocks and its row: a failure between them leaves
    both, never blocks without their patch or a patch without its blocks."""
    store = Store(tmp_path / "s.sqlite")
    store.put_patch(Patch("/c/p", "acct", "box", "big.bin", '"e1"', 10, "snap"))
    store.add_patch_blocks("/c/p", [0, 4])
    real_execute = store._db.execute

    class Failing:
        def __getattr__(self, name: str) -> object:
            return getattr(store._db_real, name)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql.startswith("DELETE FROM patches"):
                raise sqlite3.OperationalError("database or disk is full")
            return real_execute(sql, *args)

    store._db_real = store._db  # type: ignore[attr-defined]
    store._db = Failing()  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        store.drop_patch("/c/p")
    store._db = store._db_real  # type: ignore[attr-defined]
    assert store.patch_blocks("/c/p") == {0, 4}
    assert store.patch("/c/p") is not None
    store.close()


def test_which_copies_have_a_patch_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.put_patch(Patch("/c/p", "acct", "box", "big.bin", '"e1"', 10, "snap"))
    store.move_patch("/c/p", "/c/q")
    store.close()
    again = Store(path)
    assert again.patch("/c/p") is None
    assert again.patch("/c/q") == Patch("/c/q", "acct", "box", "big.bin", '"e1"', 10, "snap")
    again.drop_patch("/c/q")
    assert again.patch("/c/q") is None
    again.close()
