"""The statements both stores run, written once in PostgreSQL's ``$n`` style; SQLite reads the
same text with ``?n`` (``for_sqlite``). Times are epoch seconds as doubles. A leased event's
``due_at`` is its lease's end, so "due" and "lease expired" are one condition and one index."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from router.asyncq.record import Response
from router.asyncq.store import Backlog, Claim, DeadLetter, NewEvent


def schema(blob: str, real: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS headwater_events (
            request_id TEXT PRIMARY KEY,
            function TEXT NOT NULL,
            payload {blob} NOT NULL,
            source TEXT NOT NULL,
            received_at {real} NOT NULL,
            due_at {real} NOT NULL,
            invokes INTEGER NOT NULL DEFAULT 0,
            requeues INTEGER NOT NULL DEFAULT 0,
            lease TEXT,
            last_response {blob},
            last_error TEXT)""",
        "CREATE INDEX IF NOT EXISTS headwater_events_due ON headwater_events (due_at)",
        "CREATE INDEX IF NOT EXISTS headwater_events_function ON headwater_events (function, due_at)",
        f"""CREATE TABLE IF NOT EXISTS headwater_dead_letters (
            request_id TEXT PRIMARY KEY,
            function TEXT NOT NULL,
            source TEXT NOT NULL,
            payload {blob} NOT NULL,
            record {blob} NOT NULL,
            condition TEXT NOT NULL,
            invokes INTEGER NOT NULL,
            received_at {real} NOT NULL,
            dead_at {real} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS headwater_dead_letters_function "
        "ON headwater_dead_letters (function, dead_at)",
        "CREATE TABLE IF NOT EXISTS headwater_ticks "
        f"(trigger_name TEXT PRIMARY KEY, fired_at {real} NOT NULL)",
    ]


TABLES = ("headwater_events", "headwater_dead_letters", "headwater_ticks")

INSERT_EVENT = """INSERT INTO headwater_events (request_id, function, payload, source, received_at, due_at)
    VALUES ($1, $2, $3, $4, $5, $6)"""

CLAIMED = "request_id, function, payload, source, received_at, invokes, requeues, last_response, last_error"


def claim(*, only: str, lock: str) -> str:
    """``only`` is the condition that keeps the functions of $5 (a list), or ""; ``lock`` is
    PostgreSQL's ``FOR UPDATE SKIP LOCKED`` (SQLite has one writer and no lock)."""
    return f"""UPDATE headwater_events SET due_at = $1, lease = $2
        WHERE request_id IN (SELECT request_id FROM headwater_events WHERE due_at <= $3 {only}
                             ORDER BY due_at LIMIT $4 {lock})
        RETURNING {CLAIMED}"""


# The lease is the guard of every settlement: a node whose lease expired settles nothing.
DELETE_LEASED = "DELETE FROM headwater_events WHERE request_id = $1 AND lease = $2"

RETRY = """UPDATE headwater_events SET due_at = $3, lease = NULL,
        invokes = invokes + $4, requeues = requeues + 1 - $4,
        last_response = CASE WHEN $4 = 1 THEN $5 ELSE last_response END,
        last_error = CASE WHEN $4 = 1 THEN $6 ELSE last_error END
    WHERE request_id = $1 AND lease = $2"""

# Only a leased row: a lease that was settled meanwhile names nothing, and stays so.
EXTEND = "UPDATE headwater_events SET due_at = $2 WHERE lease = $1"

RELEASE = "UPDATE headwater_events SET due_at = $3, lease = NULL WHERE request_id = $1 AND lease = $2"

INSERT_DEAD = """INSERT INTO headwater_dead_letters
        (request_id, function, source, payload, record, condition, invokes, received_at, dead_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (request_id) DO NOTHING"""

# A tick fires when it is later than the trigger's last fired one: a node that lags behind, or
# fires the same tick a moment after another, changes nothing.
FIRE_TICK = """INSERT INTO headwater_ticks (trigger_name, fired_at) VALUES ($1, $2)
    ON CONFLICT (trigger_name) DO UPDATE SET fired_at = excluded.fired_at
        WHERE headwater_ticks.fired_at < excluded.fired_at
    RETURNING fired_at"""

LAST_TICK = "SELECT fired_at FROM headwater_ticks WHERE trigger_name = $1"

BACKLOG = """SELECT function, count(*), min(received_at) FROM headwater_events
    GROUP BY function ORDER BY function"""

DEAD = "request_id, function, source, payload, record, condition, invokes, received_at, dead_at"


def dead_letters(*, by_function: bool) -> str:
    only = "WHERE function = $2" if by_function else ""
    return f"SELECT {DEAD} FROM headwater_dead_letters {only} ORDER BY dead_at, request_id LIMIT $1"


DEAD_LETTER = f"SELECT {DEAD} FROM headwater_dead_letters WHERE request_id = $1"
DEAD_OF_FUNCTION = f"SELECT {DEAD} FROM headwater_dead_letters WHERE function = $1 ORDER BY dead_at"
DELETE_DEAD = "DELETE FROM headwater_dead_letters WHERE request_id = $1"


def for_sqlite(statement: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", statement)


# --- rows to Structs and back ---------------------------------------------------------------------


def event_row(e: NewEvent) -> tuple[Any, ...]:
    return (e.request_id, e.function, e.payload, e.source, e.received_at, e.due_at)


def claim_of(row: Any, lease: str, lease_until: float) -> Claim:
    request_id, function, payload, source, received_at, invokes, requeues, response, error = row
    return Claim(request_id, function, bytes(payload), source, received_at, invokes, requeues,
                 None if response is None else Response(bytes(response), error), lease, lease_until)


def retry_row(c: Claim, due_at: float, response: Response | None) -> tuple[Any, ...]:
    ran = response is not None
    return (c.request_id, c.lease, due_at, int(ran), response.payload if ran else None,
            response.function_error if ran else None)


def dead_row(c: Claim, condition: str, invokes: int, record: bytes, now: float) -> tuple[Any, ...]:
    return (c.request_id, c.function, c.source, c.payload, record, condition, invokes,
            c.received_at, now)


def dead_of(row: Any) -> DeadLetter:
    request_id, function, source, payload, record, condition, invokes, received_at, dead_at = row
    return DeadLetter(request_id, function, source, bytes(payload), bytes(record), condition, invokes,
                      received_at, dead_at)


def backlog_of(row: Any) -> Backlog:
    return Backlog(row[0], row[1], row[2])


def redrive_plan(dead: list[DeadLetter], request_ids: Sequence[str] | None, now: float,
                 new_id: Callable[[], str]) -> list[tuple[NewEvent, str]]:
    """The events a redrive stores (the same payload bytes, a fresh request id, due now), each
    with the dead letter it replaces."""
    wanted = None if request_ids is None else set(request_ids)
    return [(NewEvent(new_id(), d.function, d.payload, d.source, now, now), d.request_id)
            for d in dead if wanted is None or d.request_id in wanted]
