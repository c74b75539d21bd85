"""The embedded store: one SQLite file under ``data_dir``, in WAL mode, written by one thread.

Every operation is queued to the writer thread, which runs whatever has queued up in one
transaction and one commit (group commit): a burst of accepts costs one disk flush, not one each.
Results are handed back only after the commit. With ``synchronous = FULL`` (the default) a commit
is flushed to the disk before it returns, so an accepted event survives a power loss (given a disk
that honours flushes); ``NORMAL`` survives the daemon being killed but may lose the last commits
on a power loss. If one operation of a batch fails, the batch is rolled back and its operations
run again one transaction each, so one bad operation fails alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from router.asyncq import sql
from router.asyncq.record import Response
from router.asyncq.retry import Condition
from router.asyncq.store import Backlog, Claim, DeadLetter, EventStore, NewEvent, StoreError
from router.intake.invocation import new_request_id

Op = Callable[[sqlite3.Connection], Any]
_STOP = object()

_INSERT_EVENT = sql.for_sqlite(sql.INSERT_EVENT)
_CLAIM = sql.for_sqlite(sql.claim(only="", lock=""))
_CLAIM_FUNCTIONS = sql.for_sqlite(sql.claim(only="AND function IN (SELECT value FROM json_each($5))",
                                            lock=""))
_DELETE_LEASED = sql.for_sqlite(sql.DELETE_LEASED)
_RETRY = sql.for_sqlite(sql.RETRY)
_RELEASE = sql.for_sqlite(sql.RELEASE)
_EXTEND = sql.for_sqlite(sql.EXTEND)
_INSERT_DEAD = sql.for_sqlite(sql.INSERT_DEAD)
_FIRE_TICK = sql.for_sqlite(sql.FIRE_TICK)
_LAST_TICK = sql.for_sqlite(sql.LAST_TICK)
_DEAD_LETTERS = sql.for_sqlite(sql.dead_letters(by_function=False))
_DEAD_LETTERS_FUNCTION = sql.for_sqlite(sql.dead_letters(by_function=True))
_DEAD_LETTER = sql.for_sqlite(sql.DEAD_LETTER)
_DEAD_OF_FUNCTION = sql.for_sqlite(sql.DEAD_OF_FUNCTION)
_DELETE_DEAD = sql.for_sqlite(sql.DELETE_DEAD)


class SqliteStore(EventStore):
    def __init__(self, path: str | Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL",
                 batch_max: int = 1024) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.synchronous = synchronous
        self.batch_max = batch_max
        self.commits = 0  # transactions committed (group commit makes it far fewer than writes)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed: asyncio.Future[None] | None = None
        self._node = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._claims = itertools.count()

    # --- the writer thread ---------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._closed = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, opened),
                                        name="headwater-sqlite", daemon=True)
        self._thread.start()
        try:
            await opened
        except StoreError:
            self._thread = None  # it has ended: calls are refused, never queued to nobody
            raise

    async def close(self) -> None:
        if self._thread is None or self._closed is None:
            return
        self._thread = None  # from now on calls are refused rather than queued behind the stop
        self._queue.put(_STOP)
        await self._closed

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: cannot open: {e}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: cannot use WAL mode (journal mode {mode})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{self.path}: corrupt: {check}")
            conn.execute("BEGIN IMMEDIATE")
            for statement in sql.schema("BLOB", "REAL"):
                conn.execute(statement)
            # One daemon owns this file: leases left by a killed one are void, run them now.
            conn.execute("UPDATE headwater_events SET due_at = 0, lease = NULL WHERE lease IS NOT NULL")
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"{self.path}: {e}") from None
        except StoreError:
            conn.close()
            raise
        return conn

    def _run(self, loop: asyncio.AbstractEventLoop, opened: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except StoreError as e:
            loop.call_soon_threadsafe(_settle_one, opened, False, e)
            return
        loop.call_soon_threadsafe(_settle_one, opened, True, None)
        try:
            stopping = False
            while not stopping:
                batch = [self._queue.get()]
                while len(batch) < self.batch_max:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stopping = batch[-1] is _STOP
                ops = [item for item in batch if item is not _STOP]
                if ops:
                    results = self._execute(conn, [op for op, _ in ops])
                    loop.call_soon_threadsafe(_settle, [future for _, future in ops], results)
        finally:
            conn.close()
            assert self._closed is not None
            loop.call_soon_threadsafe(_settle_one, self._closed, True, None)

    def _execute(self, conn: sqlite3.Connection, ops: list[Op]) -> list[tuple[bool, Any]]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [op(conn) for op in ops]
            conn.execute("COMMIT")
        except Exception as e:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is broken; every operation reports the first error
            if len(ops) > 1:
                return [self._execute(conn, [op])[0] for op in ops]
            error = StoreError(f"{self.path}: {e}") if isinstance(e, sqlite3.Error) else e
            return [(False, error)]
        self.commits += 1
        return [(True, result) for result in results]

    async def _call(self, op: Op) -> Any:
        if self._thread is None:
            raise StoreError(f"{self.path}: the store is not open")
        future = asyncio.get_running_loop().create_future()
        self._queue.put((op, future))
        return await future

    # --- the operations ------------------------------------------------------------------------

    async def accept(self, event: NewEvent) -> None:
        row = sql.event_row(event)
        await self._call(lambda c: c.execute(_INSERT_EVENT, row))

    async def claim(self, *, now: float, limit: int, lease_s: float,
                    functions: Sequence[str] | None = None) -> list[Claim]:
        lease, until = f"{self._node}-{next(self._claims)}", now + lease_s
        if functions is None:
            statement, args = _CLAIM, (until, lease, now, limit)
        else:
            statement, args = _CLAIM_FUNCTIONS, (until, lease, now, limit, json.dumps(list(functions)))
        rows = await self._call(lambda c: c.execute(statement, args).fetchall())
        return [sql.claim_of(row, lease, until) for row in rows]

    async def complete(self, claim: Claim, *, then: NewEvent | None = None) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            if c.execute(_DELETE_LEASED, (claim.request_id, claim.lease)).rowcount != 1:
                return False
            if then is not None:
                c.execute(_INSERT_EVENT, sql.event_row(then))
            return True
        return await self._call(op)

    async def retry(self, claim: Claim, *, due_at: float, response: Response | None) -> bool:
        row = sql.retry_row(claim, due_at, response)
        return await self._call(lambda c: c.execute(_RETRY, row).rowcount == 1)

    async def dead_letter(self, claim: Claim, *, condition: Condition, invokes: int,
                          record: bytes, now: float) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            if c.execute(_DELETE_LEASED, (claim.request_id, claim.lease)).rowcount != 1:
                return False
            c.execute(_INSERT_DEAD, sql.dead_row(claim, condition, invokes, record, now))
            return True
        return await self._call(op)

    async def release(self, claim: Claim, *, now: float) -> bool:
        args = (claim.request_id, claim.lease, now)
        return await self._call(lambda c: c.execute(_RELEASE, args).rowcount == 1)

    async def extend(self, leases: Sequence[str], until: float) -> None:
        rows = [(lease, until) for lease in leases]
        await self._call(lambda c: c.executemany(_EXTEND, rows))

    async def fire_tick(self, trigger: str, at: float, event: NewEvent) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            if c.execute(_FIRE_TICK, (trigger, at)).fetchone() is None:
                return False
            c.execute(_INSERT_EVENT, sql.event_row(event))
            return True
        return await self._call(op)

    async def last_tick(self, trigger: str) -> float | None:
        row = await self._call(lambda c: c.execute(_LAST_TICK, (trigger,)).fetchone())
        return None if row is None else row[0]

    async def backlog(self) -> list[Backlog]:
        rows = await self._call(lambda c: c.execute(sql.BACKLOG).fetchall())
        return [sql.backlog_of(row) for row in rows]

    async def dead_letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        if function is None:
            statement, args = _DEAD_LETTERS, (limit,)
        else:
            statement, args = _DEAD_LETTERS_FUNCTION, (limit, function)
        rows = await self._call(lambda c: c.execute(statement, args).fetchall())
        return [sql.dead_of(row) for row in rows]

    async def dead_letter_get(self, request_id: str) -> DeadLetter | None:
        row = await self._call(lambda c: c.execute(_DEAD_LETTER, (request_id,)).fetchone())
        return None if row is None else sql.dead_of(row)

    async def redrive(self, function: str, request_ids: Sequence[str] | None, *,
                      now: float) -> list[str]:
        def op(c: sqlite3.Connection) -> list[str]:
            dead = [sql.dead_of(row) for row in c.execute(_DEAD_OF_FUNCTION, (function,))]
            plan = sql.redrive_plan(dead, request_ids, now, new_request_id)
            c.executemany(_INSERT_EVENT, [sql.event_row(event) for event, _ in plan])
            c.executemany(_DELETE_DEAD, [(old,) for _, old in plan])
            return [event.request_id for event, _ in plan]
        return await self._call(op)


def _settle_one(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # its caller was cancelled; what it asked for happened all the same
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _settle(futures: list[asyncio.Future[Any]], results: list[tuple[bool, Any]]) -> None:
    for future, (ok, value) in zip(futures, results, strict=True):
        _settle_one(future, ok, value)
