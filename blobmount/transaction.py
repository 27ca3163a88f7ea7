"""One sqlite transaction on the store's connection.

The connection is in autocommit mode (isolation_level=None: each statement commits by
itself, which the hot paths want), and in that mode `with connection:` begins
nothing, so it would commit each statement of a block on its own. `transaction`
begins one: the block's statements commit together, or none does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """The block's statements in one transaction; inside another, part of that one."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def statements(script: str) -> Iterator[str]:
    """A script's statements one by one (executescript would commit first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
