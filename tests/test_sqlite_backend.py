"""core.sqlite: the write lock taken in short polls, with the timeout and errors of SQLite's own handler.

Each test uses an SQLite file of its own under tmp_path, so it runs alike whichever database the suite uses.
"""

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError

from core.sqlite.base import Connection, DatabaseWrapper, begin_immediate

WAIT_SECONDS = 10


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, writer TEXT)")
    return path


def _connect(path: Path, *, timeout: float = WAIT_SECONDS) -> Connection:
    connection = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=False, factory=Connection
    )
    connection.lock_timeout = timeout
    return connection


class Holder:
    """Another connection holding the write lock, with a row written, until ``release()``."""

    def __init__(self, path: Path) -> None:
        self._release = threading.Event()
        locked = threading.Event()

        def hold() -> None:
            holder = _connect(path)
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("INSERT INTO entries (writer) VALUES ('holder')")
            locked.set()
            self._release.wait(WAIT_SECONDS)
            holder.execute("COMMIT")
            holder.close()

        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()
        assert locked.wait(WAIT_SECONDS)

    def release(self, *, after: float = 0) -> None:
        threading.Timer(after, self._release.set).start()

    @property
    def released(self) -> bool:
        return self._release.is_set()

    def join(self) -> None:
        self._release.set()
        self._thread.join(WAIT_SECONDS)


def _writers(connection: sqlite3.Connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT writer FROM entries ORDER BY id")]


def test_a_transaction_waits_for_the_lock_and_takes_it_once_freed(path: Path) -> None:
    holder = Holder(path)
    holder.release(after=0.2)
    waiter = _connect(path)

    begin_immediate(waiter)
    waiter.execute("INSERT INTO entries (writer) VALUES ('waiter')")
    waiter.execute("COMMIT")
    holder.join()

    assert holder.released  # it got the lock only after the holder let go
    assert _writers(waiter) == ["holder", "waiter"]
    # SQLite's handler is back for every other statement: the connection's own timeout, in ms.
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (WAIT_SECONDS * 1000,)


def test_a_lock_never_freed_fails_after_the_timeout_as_sqlite_would(path: Path) -> None:
    holder = Holder(path)
    waiter = _connect(path, timeout=0.3)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked") as raised:
            begin_immediate(waiter)
        assert raised.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
        assert not waiter.in_transaction
        assert waiter.execute("PRAGMA busy_timeout").fetchone() == (300,)
    finally:
        holder.join()
    begin_immediate(waiter)  # the same connection takes the lock once it is free
    assert waiter.in_transaction
    waiter.execute("ROLLBACK")


@pytest.fixture
def wrapper(path: Path, django_db_blocker) -> Iterator[DatabaseWrapper]:  # noqa: ANN001 - pytest-django's
    """Django's connection to the test's own file, through this backend, with a lock timeout of 0.3 s."""
    settings = {
        "ENGINE": "core.sqlite",
        "NAME": str(path),
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 0.3},
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "TIME_ZONE": None,
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "TEST": {},
    }
    wrapper = DatabaseWrapper(settings, alias="sqlite-lock-test")
    with django_db_blocker.unblock():  # a database of this test's own, not the suite's
        yield wrapper
        wrapper.close()


def test_djangos_transactions_take_the_lock_this_way(path: Path, wrapper: DatabaseWrapper) -> None:
    holder = Holder(path)
    try:
        # What transaction.atomic() does on SQLite to open its outermost block.
        with pytest.raises(OperationalError, match="locked"):
            wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        assert not wrapper.connection.in_transaction
    finally:
        holder.join()
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    assert wrapper.connection.in_transaction
    wrapper.connection.execute("ROLLBACK")


def test_a_write_in_autocommit_mode_waits_for_the_lock_and_is_applied_once(
    path: Path, wrapper: DatabaseWrapper
) -> None:
    holder = Holder(path)
    holder.release(after=0.1)
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO entries (writer) VALUES (%s)", ["autocommit"])
    holder.join()
    assert holder.released
    assert _writers(wrapper.connection) == ["holder", "autocommit"]

    holder = Holder(path)
    try:
        with pytest.raises(OperationalError, match="locked"), wrapper.cursor() as cursor:
            cursor.execute("UPDATE entries SET writer = %s", ["never"])
    finally:
        holder.join()
    assert _writers(wrapper.connection) == ["holder", "autocommit", "holder"]


def test_a_logged_query_quotes_its_parameters_as_sqlites_quote_does(path: Path, wrapper: DatabaseWrapper) -> None:
    params = [None, True, False, 0, -7, 2**62, 1.5, -0.25, "plain", "it's", "", "ünï", b"\x00\xffA", memoryview(b"ab")]
    sql = "SELECT " + ", ".join(["%s"] * len(params))
    with wrapper.cursor() as cursor:
        logged = wrapper.ops.last_executed_query(cursor, sql, params)
        quoted = cursor.execute("SELECT " + ", ".join(["QUOTE(%s)"] * len(params)), params).fetchone()
    assert logged == sql % quoted  # what Django's own would log, without asking SQLite

    with wrapper.cursor() as cursor:
        assert wrapper.ops.last_executed_query(cursor, "SELECT %(a)s", {"a": "x"}) == "SELECT 'x'"
        assert wrapper.ops.last_executed_query(cursor, "SELECT 1", None) == "SELECT 1"
