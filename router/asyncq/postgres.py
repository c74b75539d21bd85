"""The shared store: PostgreSQL, for several daemons (``[async] store = "postgresql://…"``).

Any node accepts an event and any node runs it. A claim is one statement that leases due events
with ``FOR UPDATE SKIP LOCKED``, so nodes claiming at once take disjoint events without waiting on
each other; a node that dies leaves its leases to expire, and the next claim after that takes the
events over. Accepts and plain completes are batched: while one multi-row statement is in flight,
the calls that arrive wait for the next, so a burst shares one round trip and one commit
(PostgreSQL flushes its WAL at each commit).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from router.asyncq import sql
from router.asyncq.record import Response
from router.asyncq.retry import Condition
from router.asyncq.store import Backlog, Claim, DeadLetter, EventStore, NewEvent, StoreError
from router.intake.invocation import new_request_id

T = TypeVar("T")
R = TypeVar("R")

_CLAIM = sql.claim(only="", lock="FOR UPDATE SKIP LOCKED")
_CLAIM_FUNCTIONS = sql.claim(only="AND function = ANY($5::text[])", lock="FOR UPDATE SKIP LOCKED")
_INSERT_EVENTS = """INSERT INTO headwater_events (request_id, function, payload, source, received_at, due_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::float8[], $6::float8[])"""
# The leased events of a batch of completes, each under its own lease.
_DELETE_CLAIMED = """DELETE FROM headwater_events WHERE (request_id, lease) IN
    (SELECT * FROM unnest($1::text[], $2::text[])) RETURNING request_id"""
_EXTEND = "UPDATE headwater_events SET due_at = $2 WHERE lease = ANY($1::text[])"
# Nodes that start together must not race to create the tables.
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('headwater_schema'))"
# InternalClientError: a connection the server dropped in the middle of an operation.
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
           asyncio.TimeoutError)


def redacted(dsn: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def row_error(error: BaseException) -> bool:
    """Whether a failed statement failed for what one of its rows holds (a duplicate id, a value
    out of range), rather than for the connection or the server."""
    return isinstance(error.__cause__, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError)


class Batched(Generic[T, R]):
    """Calls that arrive while a batch is in flight wait for the next one, which ``run`` does in
    one statement and one commit. A batch that fails for one of its rows (``row_error``) is run
    again one call at a time, so that the bad one fails alone; any other failure fails the batch."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.commits = 0

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def wait(self) -> None:
        if self._flushing is not None:
            await self._flushing

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._settle(batch)
        finally:
            self._flushing = None

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as e:  # every waiter hears of it; none is left hanging
            if len(batch) > 1 and row_error(e):
                for one in batch:
                    await self._settle([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        self.commits += 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class PostgresStore(EventStore):
    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.name = redacted(dsn)
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._accepts = Batched(self._insert)
        self._completes = Batched(self._delete)
        self._node = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._claims = itertools.count()

    @asynccontextmanager
    async def _connection(self, transaction: bool = True) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StoreError(f"{self.name}: the store is not open")
        try:
            async with self._pool.acquire() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except _ERRORS as e:
            raise StoreError(f"{self.name}: {e}") from e  # the cause tells a row's fault from an outage

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, timeout=self.connect_timeout_s)
        except (*_ERRORS, ValueError) as e:
            raise StoreError(f"{self.name}: cannot connect: {e}") from None
        async with self._connection() as conn:
            await conn.execute(_SCHEMA_LOCK)
            for statement in sql.schema("BYTEA", "DOUBLE PRECISION"):
                await conn.execute(statement)

    @property
    def commits(self) -> int:
        """Batched transactions committed (accepts and completes)."""
        return self._accepts.commits + self._completes.commits

    async def close(self) -> None:
        await self._accepts.wait()
        await self._completes.wait()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- accepts and completes, in batches -----------------------------------------------------

    async def accept(self, event: NewEvent) -> None:
        await self._accepts(event)

    async def _insert(self, events: list[NewEvent]) -> list[None]:
        columns = list(zip(*(sql.event_row(event) for event in events), strict=True))
        async with self._connection() as conn:
            await conn.execute(_INSERT_EVENTS, *columns)
        return [None] * len(events)

    async def _delete(self, claims: list[Claim]) -> list[bool]:
        async with self._connection(transaction=False) as conn:
            rows = await conn.fetch(_DELETE_CLAIMED, [c.request_id for c in claims],
                                    [c.lease for c in claims])
        deleted = {row[0] for row in rows}
        return [c.request_id in deleted for c in claims]

    # --- the rest ------------------------------------------------------------------------------

    async def claim(self, *, now: float, limit: int, lease_s: float,
                    functions: Sequence[str] | None = None) -> list[Claim]:
        lease, until = f"{self._node}-{next(self._claims)}", now + lease_s
        async with self._connection(transaction=False) as conn:
            if functions is None:
                rows = await conn.fetch(_CLAIM, until, lease, now, limit)
            else:
                rows = await conn.fetch(_CLAIM_FUNCTIONS, until, lease, now, limit, list(functions))
        return [sql.claim_of(tuple(row), lease, until) for row in rows]

    async def _delete_leased(self, conn: asyncpg.Connection, claim: Claim) -> bool:
        return await conn.execute(sql.DELETE_LEASED, claim.request_id, claim.lease) == "DELETE 1"

    async def complete(self, claim: Claim, *, then: NewEvent | None = None) -> bool:
        if then is None:
            return await self._completes(claim)
        async with self._connection() as conn:
            if not await self._delete_leased(conn, claim):
                return False
            if then is not None:
                await conn.execute(sql.INSERT_EVENT, *sql.event_row(then))
            return True

    async def retry(self, claim: Claim, *, due_at: float, response: Response | None) -> bool:
        async with self._connection(transaction=False) as conn:
            status = await conn.execute(sql.RETRY, *sql.retry_row(claim, due_at, response))
        return status == "UPDATE 1"

    async def dead_letter(self, claim: Claim, *, condition: Condition, invokes: int,
                          record: bytes, now: float) -> bool:
        async with self._connection() as conn:
            if not await self._delete_leased(conn, claim):
                return False
            await conn.execute(sql.INSERT_DEAD, *sql.dead_row(claim, condition, invokes, record, now))
            return True

    async def release(self, claim: Claim, *, now: float) -> bool:
        async with self._connection(transaction=False) as conn:
            status = await conn.execute(sql.RELEASE, claim.request_id, claim.lease, now)
        return status == "UPDATE 1"

    async def extend(self, leases: Sequence[str], until: float) -> None:
        async with self._connection(transaction=False) as conn:
            await conn.execute(_EXTEND, list(leases), until)

    async def fire_tick(self, trigger: str, at: float, event: NewEvent) -> bool:
        async with self._connection() as conn:
            if await conn.fetchrow(sql.FIRE_TICK, trigger, at) is None:
                return False
            await conn.execute(sql.INSERT_EVENT, *sql.event_row(event))
            return True

    async def last_tick(self, trigger: str) -> float | None:
        async with self._connection(transaction=False) as conn:
            return await conn.fetchval(sql.LAST_TICK, trigger)

    async def backlog(self) -> list[Backlog]:
        return [sql.backlog_of(row) for row in await self._fetch(sql.BACKLOG)]

    async def dead_letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        if function is None:
            rows = await self._fetch(sql.dead_letters(by_function=False), limit)
        else:
            rows = await self._fetch(sql.dead_letters(by_function=True), limit, function)
        return [sql.dead_of(row) for row in rows]

    async def dead_letter_get(self, request_id: str) -> DeadLetter | None:
        rows = await self._fetch(sql.DEAD_LETTER, request_id)
        return sql.dead_of(rows[0]) if rows else None

    async def _fetch(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self._connection(transaction=False) as conn:
            return [tuple(row) for row in await conn.fetch(statement, *args)]

    async def redrive(self, function: str, request_ids: Sequence[str] | None, *,
                      now: float) -> list[str]:
        async with self._connection() as conn:
            dead = [sql.dead_of(row) for row in await conn.fetch(sql.DEAD_OF_FUNCTION + " FOR UPDATE",
                                                                 function)]
            plan = sql.redrive_plan(dead, request_ids, now, new_request_id)
            await conn.executemany(sql.INSERT_EVENT, [sql.event_row(event) for event, _ in plan])
            await conn.executemany(sql.DELETE_DEAD, [(old,) for _, old in plan])
            return [event.request_id for event, _ in plan]
