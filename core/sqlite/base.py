"""Django's SQLite backend, taking the write lock in short polls rather than through SQLite's busy handler.

Every process of a run writes to one SQLite file: the web server, the relay and each consumer queue on
its single write lock. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then
100 ms between tries, however soon the lock comes free: a writer that finds the lock taken three times
has slept 8 ms, seven times 78 ms, for locks held a few milliseconds each. Under load those sleeps were
the tail of an order's latency.

Here the two ways a write takes the lock poll for it instead, with the busy handler off, after pauses
that start at 0.1 ms and double up to 2 ms, until the connection's timeout (OPTIONS["timeout"]) runs out;
then they fail as SQLite would, with "database is locked":

- the ``BEGIN IMMEDIATE`` that opens a transaction (``transaction_mode``, settings.DATABASES);
- a statement run on its own in autocommit mode (the relay's UPDATE of the rows it published, a
  ``save()`` outside ``atomic()``). A statement refused the lock has changed nothing, so it is run again.
  ``executemany`` is not: in autocommit each of its rows commits on its own, so it keeps the handler.

Every other statement keeps SQLite's handler; under WAL, a statement inside a transaction that holds
the write lock, or any read, does not wait for it.
"""

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db.backends.sqlite3 import base, operations

FIRST_PAUSE_SECONDS = 0.0001
LONGEST_PAUSE_SECONDS = 0.002
# How long a connection waits for the lock when OPTIONS say nothing: sqlite3.connect()'s default.
DEFAULT_TIMEOUT_SECONDS = 5.0

T = TypeVar("T")


class Connection(sqlite3.Connection):
    """sqlite3's connection, knowing how long it may wait for the write lock."""

    lock_timeout: float = DEFAULT_TIMEOUT_SECONDS


class CursorWrapper(base.SQLiteCursorWrapper):
    connection: Connection

    def execute(self, query: str, params: Any = None) -> Any:
        if self.connection.isolation_level is not None or self.connection.in_transaction or _reads(query):
            return super().execute(query, params)
        return poll_for_lock(self.connection, lambda: super(CursorWrapper, self).execute(query, params))


class DatabaseOperations(operations.DatabaseOperations):
    def _quote_params_for_last_executed_query(self, params: Any) -> tuple[str, ...]:
        # Django's asks SQLite to QUOTE() each parameter, a query of its own for every statement logged
        # (with DEBUG, every statement): quoted here, as QUOTE() does for the types a query binds.
        return tuple(map(quote, params))


def quote(value: Any) -> str:
    """``value`` as SQLite's QUOTE() writes it, for the text of a logged query."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"X'{bytes(value).hex().upper()}'"
    text = str(value).replace("'", "''")
    return f"'{text}'"


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def get_new_connection(self, conn_params: dict[str, Any]) -> Connection:
        connection: Connection = super().get_new_connection({**conn_params, "factory": Connection})
        connection.lock_timeout = conn_params.get("timeout", DEFAULT_TIMEOUT_SECONDS)
        return connection

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        cursor: CursorWrapper = self.connection.cursor(factory=CursorWrapper)
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        # Django's own, for the modes that do not take the lock at BEGIN (neither attribute is in its stubs).
        if getattr(self, "transaction_mode", None) != "IMMEDIATE":
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
            return
        with self.wrap_database_errors:
            begin_immediate(self.connection)


def begin_immediate(connection: Connection) -> None:
    """BEGIN IMMEDIATE on ``connection``, polling for the write lock."""
    poll_for_lock(connection, lambda: connection.execute("BEGIN IMMEDIATE"))


def poll_for_lock(connection: Connection, statement: Callable[[], T]) -> T:
    """Run ``statement``, which takes the write lock or changes nothing, again after a short pause while
    the lock is taken, for up to the connection's timeout; then the lock's error (SQLITE_BUSY)."""
    deadline = time.monotonic() + connection.lock_timeout
    pause = FIRST_PAUSE_SECONDS
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                return statement()
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(connection.lock_timeout * 1000)}")


def _reads(query: str) -> bool:
    return query.lstrip()[:6].upper() == "SELECT"
