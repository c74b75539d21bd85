"""The durable store of asynchronous events: what an implementation must do, and the table that
picks one from the ``[async] store`` setting ("sqlite", or a ``postgresql://`` URL).

An event is a request (its id, function, payload bytes, when it was received) and a history of
attempts (how often the function ran, how often it was throttled, its last response). A node
*claims* due events with a lease: the event is hidden from every other node until the lease ends,
and only the lease's holder can settle it (complete, retry, dead-letter, release). A node that
dies holding leases loses them when they expire and another node takes the events over, so an
event runs at least once and may run twice; it is never dropped, since every settlement that
removes an event writes its successor (a destination's event, a dead letter) in the same
transaction.

Schedule ticks live here too: ``fire_tick`` stores a tick's event only if no node has fired that
tick (or a later one) of the same trigger, so each tick fires once however many daemons share it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

import msgspec

from router.asyncq.record import Response
from router.asyncq.retry import Condition


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names it and says why."""


class NewEvent(msgspec.Struct, frozen=True):
    request_id: str
    function: str
    payload: bytes  # the JSON as received, byte for byte
    source: str  # "event", "schedule", "redrive", …: what metering records as the source
    received_at: float  # epoch seconds; the event's age counts from here
    due_at: float  # when it may first run


class Claim(msgspec.Struct, frozen=True):
    """An event leased to one node for one attempt."""

    request_id: str
    function: str
    payload: bytes
    source: str
    received_at: float
    invokes: int  # times the function ran before this attempt
    requeues: int  # throttles and system errors before this attempt
    last_response: Response | None
    lease: str
    lease_until: float

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1: each has its own metering record."""
        return self.invokes + self.requeues + 1


class DeadLetter(msgspec.Struct, frozen=True):
    request_id: str
    function: str
    source: str
    payload: bytes
    record: bytes  # the destination record it ended with
    condition: Condition
    invokes: int
    received_at: float
    dead_at: float


class Backlog(msgspec.Struct, frozen=True):
    function: str
    pending: int  # events stored and not finished, leased ones included
    oldest_received_at: float


class EventStore(ABC):
    """Every method is a transaction of its own that is durable when it returns."""

    name: str  # what messages call it: the file, or the URL without its password

    @abstractmethod
    async def open(self) -> None:
        """Connect, create the tables if they are missing, check them; ``StoreError`` if not."""

    @abstractmethod
    async def close(self) -> None:
        """Finish what was submitted, then disconnect."""

    @abstractmethod
    async def accept(self, event: NewEvent) -> None:
        """Store a new event. Concurrent accepts share one commit."""

    @abstractmethod
    async def claim(self, *, now: float, limit: int, lease_s: float,
                    functions: Sequence[str] | None = None) -> list[Claim]:
        """Lease up to ``limit`` events due at ``now`` (oldest due first) until ``now + lease_s``;
        only events of ``functions`` if given (a node claims only what it can run)."""

    @abstractmethod
    async def complete(self, claim: Claim, *, then: NewEvent | None = None) -> bool:
        """Remove a finished event, storing ``then`` (a destination's event) in its place.
        False, and nothing done, if the lease was lost to another node."""

    @abstractmethod
    async def retry(self, claim: Claim, *, due_at: float, response: Response | None) -> bool:
        """Put the event back, due at ``due_at``: after a function error with its ``response``
        (it ran), or after a throttle or system error with None (it did not)."""

    @abstractmethod
    async def dead_letter(self, claim: Claim, *, condition: Condition, invokes: int,
                          record: bytes, now: float) -> bool:
        """Move the event to the dead-letter store with its destination ``record``."""

    @abstractmethod
    async def release(self, claim: Claim, *, now: float) -> bool:
        """Give an event back unrun (shutdown), due at ``now``, its history unchanged."""

    @abstractmethod
    async def extend(self, leases: Sequence[str], until: float) -> None:
        """Renew the leases (of events still running here) to ``until``."""

    @abstractmethod
    async def fire_tick(self, trigger: str, at: float, event: NewEvent) -> bool:
        """Store ``event`` for the tick of ``trigger`` at ``at``, unless that tick or a later one
        was fired already; True if this call fired it."""

    @abstractmethod
    async def last_tick(self, trigger: str) -> float | None:
        """The latest tick of ``trigger`` fired so far."""

    @abstractmethod
    async def backlog(self) -> list[Backlog]:
        """Per function, the events not finished and the oldest one's arrival."""

    @abstractmethod
    async def dead_letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The dead letters (of ``function``), oldest first."""

    @abstractmethod
    async def dead_letter_get(self, request_id: str) -> DeadLetter | None: ...

    @abstractmethod
    async def redrive(self, function: str, request_ids: Sequence[str] | None, *,
                      now: float) -> list[str]:
        """Turn dead letters of ``function`` (those named, or all) back into new events with the
        same payload bytes and fresh request ids, in one transaction; the new ids."""


def open_store(setting: str, data_dir: str | Path, *, synchronous: str = "FULL") -> EventStore:
    """The store ``[async] store`` names (not yet opened); ``synchronous`` is SQLite's."""
    if setting == "sqlite":
        from router.asyncq.sqlite import SqliteStore
        return SqliteStore(Path(data_dir) / "async.sqlite3",
                           synchronous=cast(Literal["FULL", "NORMAL"], synchronous))
    if setting.startswith(("postgresql://", "postgres://")):
        from router.asyncq.postgres import PostgresStore
        return PostgresStore(setting)
    raise StoreError(f'unknown store {setting!r}: "sqlite" or a postgresql:// URL')
