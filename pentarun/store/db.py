"""SQLite in WAL mode: one writer connection on one dedicated thread, reads inline.

aiosqlite does not run under trio (STACK_NOTES §3), and a thread hop costs ~150 µs, so:
- `await db.write(fn)` runs `fn(conn)` on the writer thread and returns its result;
- `db.defer(sql, params)` queues a write nobody waits for (health checks, events, audit);
- the writer drains everything queued and commits it as one transaction (group commit), each
  job inside its own savepoint, so one failing job rolls back alone;
- `db.read(sql, params)` runs on a separate read-only connection in the caller's thread: cheap
  indexed reads do not pay the hop. A finished `write` is visible to every later `read`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import trio

from .schema import migrate

T = TypeVar("T")

log = logging.getLogger(__name__)


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "result", "token")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], T], token: trio.lowlevel.TrioToken | None
    ):
        self.fn = fn
        self.token = token
        self.done = trio.Event() if token is not None else None
        self.result: T | None = None
        self.error: BaseException | None = None


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if read_only:
        conn.execute("PRAGMA query_only=ON")
    else:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        writer = _connect(path, read_only=False)
        migrate(writer)
        self._writer_conn = writer
        self._reader = _connect(path, read_only=True)
        # told of every lifecycle event and audit record as it is written: (kind, fields)
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
        self._thread = threading.Thread(target=self._run_writer, name="pentarun-db", daemon=True)
        self._thread.start()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        job: _Job[T] = _Job(fn, trio.lowlevel.current_trio_token())
        self._queue.put(job)
        assert job.done is not None
        # The job runs to completion even if we are cancelled: never abandon the connection.
        with trio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
        """One statement; returns the number of rows it changed."""
        return await self.write(lambda conn: conn.execute(sql, params).rowcount)

    def defer(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> None:
        self._queue.put(_Job(lambda conn: conn.execute(sql, params), None))

    def notify(self, kind: str, fields: dict[str, Any]) -> None:
        for observer in self.observers:
            try:
                observer(kind, dict(fields))
            except Exception:
                log.exception("database observer failed")

    def read(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._reader.execute(sql, params).fetchall()

    def read_one(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._reader.execute(sql, params).fetchone()
        return row

    async def flush(self) -> None:
        """Wait until every write queued before this call is committed."""
        await self.write(lambda conn: None)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._reader.close()

    def _run_writer(self) -> None:
        conn = self._writer_conn
        stopping = False
        while not stopping:
            batch: list[_Job[Any]] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                stopping = True
            if batch:
                self._commit(conn, batch)
        conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    job.error = exc
                    if job.token is None:
                        log.error("deferred write failed: %s", exc)
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction itself failed: fail every job
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.error = job.error or exc
        for job in batch:
            if job.token is not None and job.done is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    job.token.run_sync_soon(job.done.set)


@asynccontextmanager
async def open_database(path: Path) -> AsyncIterator[Database]:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await trio.to_thread.run_sync(Database, path)
    try:
        yield db
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(db.close)
