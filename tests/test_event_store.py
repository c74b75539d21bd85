"""The durable event store, the same contract run against both implementations: SQLite files
under tmp_path and a fresh database on the machine's PostgreSQL. Then what each must survive on
its own: a SQLite writer killed with SIGKILL mid-burst, a PostgreSQL node killed while it holds
leases, and stores that cannot be opened."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from router.asyncq.postgres import PostgresStore, redacted
from router.asyncq.record import Response
from router.asyncq.sqlite import SqliteStore
from router.asyncq.store import Claim, EventStore, NewEvent, StoreError, open_store
from router.intake.invocation import new_request_id

T0 = 1_800_000_000.0
ROOT = Path(__file__).resolve().parent.parent
# Bytes a decode and re-encode would change: spacing, escapes, a raw multi-byte character.
PAYLOAD = b'{ "order": 17,\n  "note": "caf\\u00e9 \xc3\xa9",  "n": 1.50 }'


def event(function: str = "orders", payload: bytes = PAYLOAD, *, at: float = T0,
          due: float | None = None, source: str = "event") -> NewEvent:
    return NewEvent(new_request_id(), function, payload, source, at, at if due is None else due)


async def truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE headwater_events, headwater_dead_letters, headwater_ticks")
    finally:
        await conn.close()


MakeStore = Callable[[], Awaitable[EventStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory of opened stores of one kind, over one database; the first call empties it."""
    opened: list[EventStore] = []

    async def make() -> EventStore:
        if request.param == "sqlite":
            store: EventStore = SqliteStore(tmp_path / "data" / "async.sqlite3")
        else:
            store = PostgresStore(request.getfixturevalue("postgres_dsn"))
        await store.open()
        if not opened and isinstance(store, PostgresStore):
            await truncate(store.dsn)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> EventStore:
    return await make_store()


async def claim_one(store: EventStore, now: float = T0, lease_s: float = 30) -> Claim:
    claims = await store.claim(now=now, limit=10, lease_s=lease_s)
    assert len(claims) == 1, claims
    return claims[0]


# --- the contract ----------------------------------------------------------------------------------


async def test_an_event_round_trip_keeps_its_bytes(store: EventStore) -> None:
    e = event()
    await store.accept(e)
    c = await claim_one(store)
    assert (c.request_id, c.function, c.payload, c.source, c.received_at) == (
        e.request_id, "orders", PAYLOAD, "event", T0)
    assert (c.invokes, c.requeues, c.attempt, c.last_response, c.lease_until) == (0, 0, 1, None, T0 + 30)
    assert await store.complete(c)
    assert await store.claim(now=T0 + 1000, limit=10, lease_s=30) == []
    assert await store.backlog() == []


async def test_claims_take_due_events_oldest_first_within_the_limit(store: EventStore) -> None:
    late = event(due=T0 + 20)
    early = [event(at=T0 + i) for i in range(5)]
    other = event("billing", at=T0 - 1)
    for e in [late, *reversed(early), other]:
        await store.accept(e)
    first = await store.claim(now=T0 + 10, limit=3, lease_s=30)
    assert sorted(c.request_id for c in first) == sorted(
        [other.request_id, early[0].request_id, early[1].request_id])
    only_orders = await store.claim(now=T0 + 10, limit=10, lease_s=30, functions=["orders"])
    assert sorted(c.request_id for c in only_orders) == sorted(e.request_id for e in early[2:])
    assert await store.claim(now=T0 + 10, limit=10, lease_s=30) == []  # the late one is not due
    assert [c.request_id for c in await store.claim(now=T0 + 20, limit=10, lease_s=30)] == [late.request_id]


async def test_a_lease_hides_an_event_until_it_expires(store: EventStore) -> None:
    await store.accept(event())
    held = await claim_one(store, lease_s=30)
    assert await store.claim(now=T0 + 29, limit=10, lease_s=30) == []
    taken = await claim_one(store, now=T0 + 31)  # the holder is presumed dead
    assert (taken.request_id, taken.invokes) == (held.request_id, 0)
    assert taken.lease != held.lease
    # The first holder comes back too late: nothing it says counts.
    assert not await store.complete(held)
    assert not await store.retry(held, due_at=T0 + 100, response=None)
    assert not await store.release(held, now=T0 + 40)
    assert not await store.dead_letter(held, condition="RetriesExhausted", invokes=1, record=b"{}",
                                       now=T0 + 40)
    assert await store.complete(taken)


async def test_a_renewed_lease_keeps_the_event_hidden_and_only_its_own(store: EventStore) -> None:
    await store.accept(event())
    await store.accept(event())
    held = await store.claim(now=T0, limit=2, lease_s=30)
    assert len(held) == 2
    await store.extend([held[0].lease], T0 + 100)  # both share the claim's lease
    assert await store.claim(now=T0 + 31, limit=10, lease_s=30) == []
    assert await store.complete(held[0])
    other = await claim_one(store, now=T0 + 101)
    assert other.request_id == held[1].request_id
    await store.extend([held[1].lease], T0 + 500)  # a lease lost meanwhile is not taken back
    assert await store.complete(other)


async def test_completes_at_once_each_check_their_own_lease(store: EventStore) -> None:
    for _ in range(3):
        await store.accept(event())
    stale = sorted(await store.claim(now=T0, limit=10, lease_s=30), key=lambda c: c.request_id)
    fresh = sorted(await store.claim(now=T0 + 31, limit=10, lease_s=30), key=lambda c: c.request_id)
    done = await asyncio.gather(store.complete(stale[0]), store.complete(fresh[1]),
                                store.complete(fresh[2]))
    assert done == [False, True, True]
    assert [c.request_id for c in await store.claim(now=T0 + 62, limit=10, lease_s=30)] == [
        stale[0].request_id]  # the stale complete removed nothing


async def test_retries_keep_the_request_and_count_its_attempts(store: EventStore) -> None:
    e = event()
    await store.accept(e)
    first = await claim_one(store)
    error = Response(b'{"errorMessage":"boom"}', "Unhandled")
    assert await store.retry(first, due_at=T0 + 60, response=error)  # the function ran and failed
    assert await store.claim(now=T0 + 59, limit=10, lease_s=30) == []
    second = await claim_one(store, now=T0 + 60)
    assert (second.request_id, second.invokes, second.requeues, second.attempt) == (e.request_id, 1, 0, 2)
    assert second.last_response == error
    assert await store.retry(second, due_at=T0 + 61, response=None)  # throttled: it did not run
    third = await claim_one(store, now=T0 + 61)
    assert (third.request_id, third.invokes, third.requeues, third.attempt) == (e.request_id, 1, 1, 3)
    assert third.last_response == error  # still the last response the function gave
    assert third.payload == PAYLOAD


async def test_release_gives_an_event_back_as_it_was(store: EventStore) -> None:
    await store.accept(event())
    c = await claim_one(store)
    assert await store.release(c, now=T0 + 1)
    again = await claim_one(store, now=T0 + 1)
    assert (again.request_id, again.invokes, again.requeues) == (c.request_id, 0, 0)


async def test_complete_can_store_the_destination_event_in_the_same_step(store: EventStore) -> None:
    await store.accept(event())
    c = await claim_one(store)
    follow = event("audit", b'{"version":"1.0"}', at=T0 + 5, source="destination")
    assert await store.complete(c, then=follow)
    [d] = await store.claim(now=T0 + 5, limit=10, lease_s=30)
    assert (d.request_id, d.function, d.payload, d.source) == (follow.request_id, "audit",
                                                               b'{"version":"1.0"}', "destination")


async def test_dead_letters_keep_the_payload_and_redrive_it(store: EventStore) -> None:
    events = [event(), event(), event("billing", b"[1, 2]")]
    for e in events:
        await store.accept(e)
    for c in await store.claim(now=T0, limit=10, lease_s=30):
        record = b'{"requestContext":{"condition":"RetriesExhausted"}}'
        assert await store.dead_letter(c, condition="RetriesExhausted", invokes=3, record=record,
                                       now=T0 + 200)
    assert await store.backlog() == []
    listed = await store.dead_letters()
    assert sorted(d.request_id for d in listed) == sorted(e.request_id for e in events)
    assert [d.function for d in await store.dead_letters("billing")] == ["billing"]
    shown = await store.dead_letter_get(events[0].request_id)
    assert shown is not None
    assert (shown.payload, shown.condition, shown.invokes, shown.received_at, shown.dead_at) == (
        PAYLOAD, "RetriesExhausted", 3, T0, T0 + 200)
    assert await store.dead_letter_get("no-such-id") is None

    one = await store.redrive("orders", [events[1].request_id], now=T0 + 300)
    assert len(one) == 1 and one[0] != events[1].request_id  # a new request
    assert await store.dead_letter_get(events[1].request_id) is None
    rest = await store.redrive("orders", None, now=T0 + 300)
    assert len(rest) == 1
    assert await store.redrive("orders", None, now=T0 + 300) == []
    again = await store.claim(now=T0 + 300, limit=10, lease_s=30)
    assert sorted(c.request_id for c in again) == sorted(one + rest)
    assert {(c.payload, c.invokes, c.received_at) for c in again} == {(PAYLOAD, 0, T0 + 300)}
    assert [d.function for d in await store.dead_letters()] == ["billing"]


async def test_each_tick_fires_once(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    fired = []
    for tick in range(5):
        at = T0 + tick
        for node in (a, b, a):
            tick_event = event(source="schedule", at=at)
            if await node.fire_tick("nightly", at, tick_event):
                fired.append(tick_event.request_id)
    assert len(fired) == 5
    assert not await a.fire_tick("nightly", T0 + 2, event(source="schedule"))  # behind: no
    assert await b.fire_tick("hourly", T0 + 2, event(source="schedule"))  # another trigger
    assert await a.last_tick("nightly") == T0 + 4
    assert await b.last_tick("never") is None
    claimed = await a.claim(now=T0 + 10, limit=100, lease_s=30)
    assert len(claimed) == 6 and set(fired) <= {c.request_id for c in claimed}


async def test_backlog_per_function(store: EventStore) -> None:
    for at, function in [(T0 + 3, "orders"), (T0 + 1, "orders"), (T0 + 2, "billing")]:
        await store.accept(event(function, at=at))
    await store.claim(now=T0 + 5, limit=1, lease_s=30)  # leased events are still pending
    assert [(b.function, b.pending, b.oldest_received_at) for b in await store.backlog()] == [
        ("billing", 1, T0 + 2), ("orders", 2, T0 + 1)]


async def test_a_burst_of_accepts_shares_commits(store: EventStore) -> None:
    assert isinstance(store, SqliteStore | PostgresStore)
    before = store.commits
    events = [event(at=T0 + i) for i in range(500)]
    await asyncio.gather(*(store.accept(e) for e in events))
    assert 1 <= store.commits - before <= 10
    claimed = await store.claim(now=T0 + 1000, limit=1000, lease_s=30)
    assert sorted(c.request_id for c in claimed) == sorted(e.request_id for e in events)


async def test_one_bad_write_fails_alone(store: EventStore) -> None:
    good, twin = event(), event()
    dup = NewEvent(good.request_id, "orders", b"{}", "event", T0, T0)
    results = await asyncio.gather(store.accept(good), store.accept(dup), store.accept(twin),
                                   return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreError)
    claimed = await store.claim(now=T0, limit=10, lease_s=30)
    assert sorted(c.request_id for c in claimed) == sorted([good.request_id, twin.request_id])
    assert {c.payload for c in claimed} == {PAYLOAD}


# --- PostgreSQL: several nodes -------------------------------------------------------------------


@pytest.fixture
async def pg_nodes(postgres_dsn: str) -> AsyncIterator[list[PostgresStore]]:
    nodes = [PostgresStore(postgres_dsn), PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)]
    await asyncio.gather(*(n.open() for n in nodes))  # at once: the schema lock keeps them apart
    await truncate(postgres_dsn)
    yield nodes
    for n in nodes:
        await n.close()


async def test_nodes_claiming_at_once_take_disjoint_events(pg_nodes: list[PostgresStore]) -> None:
    events = [event(at=T0 + i % 7) for i in range(300)]
    await asyncio.gather(*(pg_nodes[i % 3].accept(e) for i, e in enumerate(events)))
    taken: list[list[Claim]] = [[], [], []]

    async def drain(i: int) -> None:
        while claims := await pg_nodes[i].claim(now=T0 + 10, limit=7, lease_s=30):
            taken[i].extend(claims)
            for c in claims:
                assert await pg_nodes[i].complete(c)

    await asyncio.gather(*(drain(i) for i in range(3)))
    ids = [c.request_id for claims in taken for c in claims]
    assert sorted(ids) == sorted(e.request_id for e in events)  # each once, none lost
    assert all(taken), [len(t) for t in taken]  # and all three had a share


async def test_nodes_firing_at_once_fire_each_tick_once(pg_nodes: list[PostgresStore]) -> None:
    for tick in range(20):
        at = T0 + tick
        fired = await asyncio.gather(*(n.fire_tick("every-second", at, event(source="schedule", at=at))
                                       for n in pg_nodes))
        assert fired.count(True) == 1, (tick, fired)
    assert len(await pg_nodes[0].claim(now=T0 + 100, limit=100, lease_s=30)) == 20


async def test_connections_dropped_by_the_server_lose_no_accept(pg_nodes: list[PostgresStore],
                                                                 postgres_dsn: str) -> None:
    """Each accept in flight when the server drops the connections is either stored or fails
    with StoreError (never told "stored" otherwise); the store reconnects by itself."""
    node = pg_nodes[0]
    await node.accept(event())  # the pool holds a live connection
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()
    during = [event() for _ in range(10)]
    results = await asyncio.gather(*(node.accept(e) for e in during), return_exceptions=True)
    assert all(r is None or isinstance(r, StoreError) for r in results), results
    after = [event() for _ in range(10)]
    await asyncio.gather(*(node.accept(e) for e in after))
    stored = {c.request_id for c in await node.claim(now=T0, limit=100, lease_s=30)}
    assert {e.request_id for e, r in zip(during, results, strict=True) if r is None} <= stored
    assert {e.request_id for e in after} <= stored


DEAD_NODE = """
import asyncio, sys, time
from router.asyncq.postgres import PostgresStore

async def main():
    store = PostgresStore(sys.argv[1])
    await store.open()
    claims = await store.claim(now=time.time(), limit=1000, lease_s=float(sys.argv[2]))
    print(len(claims), claims[0].lease_until, flush=True)
    await asyncio.Event().wait()  # holds its leases until it is killed

asyncio.run(main())
"""


async def test_a_dead_nodes_events_are_taken_over_when_its_leases_expire(
        pg_nodes: list[PostgresStore], postgres_dsn: str) -> None:
    live = pg_nodes[0]
    events = [event(at=time.time() - 1) for _ in range(50)]
    await asyncio.gather(*(live.accept(e) for e in events))
    node = await asyncio.create_subprocess_exec(sys.executable, "-c", DEAD_NODE, postgres_dsn, "1.5",
                                                cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert node.stdout is not None
        count, lease_until = (await asyncio.wait_for(node.stdout.readline(), 20)).split()
        assert count == b"50"
        node.send_signal(signal.SIGKILL)
        await node.wait()
        assert await live.claim(now=time.time(), limit=100, lease_s=30) == []  # still leased
        await asyncio.sleep(max(0.0, float(lease_until) + 0.05 - time.time()))
        taken = await live.claim(now=time.time(), limit=100, lease_s=30)
        assert sorted(c.request_id for c in taken) == sorted(e.request_id for e in events)
        assert {c.payload for c in taken} == {PAYLOAD}
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()


async def test_an_unreachable_postgresql_is_reported(unused_tcp_port: int) -> None:
    store = PostgresStore(f"postgresql://postgres:secret@127.0.0.1:{unused_tcp_port}/x",
                          connect_timeout_s=2)
    with pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith(f"postgresql://postgres:***@127.0.0.1:{unused_tcp_port}/x: cannot connect: ")
    assert "secret" not in message
    with pytest.raises(StoreError, match="not open"):
        await store.accept(event())


async def test_a_missing_database_is_reported(postgres_dsn: str) -> None:
    dsn = postgres_dsn.rpartition("/")[0] + "/headwater_no_such_database"
    with pytest.raises(StoreError, match='database "headwater_no_such_database" does not exist'):
        await PostgresStore(dsn).open()


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://u:pw@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("postgresql://u@db/x", "postgresql://u@db/x"),
    ("postgresql://db/x", "postgresql://db/x"),
])
def test_redacted(dsn: str, shown: str) -> None:
    assert redacted(dsn) == shown


# --- SQLite: one file, one writer ----------------------------------------------------------------


WRITER = """
import asyncio, sys
from router.asyncq.store import NewEvent, open_store
from router.intake.invocation import new_request_id

async def main():
    store = open_store(sys.argv[1], sys.argv[2])
    await store.open()
    claimed = await store.claim(now=0, limit=1, lease_s=1e9)  # a lease the kill leaves behind
    print("claimed", ",".join(c.request_id for c in claimed), flush=True)

    async def accept():
        e = NewEvent(new_request_id(), "f", b'{"n": 1}', "event", 1.0, 1.0)
        await store.accept(e)
        print(e.request_id, flush=True)  # only once it is committed

    while True:
        await asyncio.gather(*(accept() for _ in range(50)))

asyncio.run(main())
"""


async def opened(setting: str, data_dir: Path) -> EventStore:
    store = open_store(setting, data_dir)
    await store.open()
    return store


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_accepted_events_survive_kill_9(kind: str, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    """A writer killed with SIGKILL mid-burst: every accept it acknowledged is stored. On SQLite,
    the one daemon of its file, the lease the killed writer held is void at the next open."""
    setting = "sqlite" if kind == "sqlite" else request.getfixturevalue("postgres_dsn")
    seeded = await opened(setting, tmp_path)
    if kind == "postgresql":
        await truncate(setting)
    leased = event(at=0.0)
    await seeded.accept(leased)
    await seeded.close()
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, setting, str(tmp_path), cwd=ROOT, stdout=subprocess.PIPE)
    assert writer.stdout is not None
    acknowledged: list[bytes] = []
    try:
        line = await asyncio.wait_for(writer.stdout.readline(), 20)
        assert line.split() == [b"claimed", leased.request_id.encode()]
        async with asyncio.timeout(30):
            while len(acknowledged) < 1000:
                acknowledged.append((await writer.stdout.readline()).strip())
        writer.send_signal(signal.SIGKILL)  # mid-burst: some accepts queued, some committing
        await writer.wait()
        acknowledged += (await writer.stdout.read()).split()  # what it printed before it died
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
    reopened = await opened(setting, tmp_path)
    try:
        stored = {c.request_id.encode() for c in await reopened.claim(now=10.0, limit=100_000,
                                                                      lease_s=30)}
    finally:
        await reopened.close()
    assert len(acknowledged) >= 1000
    assert set(acknowledged) - stored == set()  # every acknowledged accept is there
    assert (leased.request_id.encode() in stored) is (kind == "sqlite")


def test_a_file_that_is_not_a_store_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "async.sqlite3"
    path.write_bytes(b"this is not a database, " * 100)
    store = SqliteStore(path)

    async def use() -> None:
        with pytest.raises(StoreError, match=rf"^{path}: file is not a database$"):
            await store.open()
        with pytest.raises(StoreError, match="the store is not open"):  # refused, not left waiting
            await asyncio.wait_for(store.accept(event()), 5)

    asyncio.run(use())


def test_a_corrupt_store_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "async.sqlite3"

    async def fill() -> None:
        store = SqliteStore(path)
        await store.open()
        await asyncio.gather(*(store.accept(event(payload=b'"%s"' % (b"x" * 3000))) for _ in range(300)))
        await store.close()

    asyncio.run(fill())
    with path.open("r+b") as f:  # scribble over the tables' pages, past the header page
        f.seek(8192)
        f.write(os.urandom(64 * 1024))
    with pytest.raises(StoreError, match=rf"^{path}: "):
        asyncio.run(SqliteStore(path).open())


def test_an_unwritable_place_is_reported(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    with pytest.raises(StoreError, match=r"async.sqlite3: cannot open: "):
        asyncio.run(SqliteStore(tmp_path / "data" / "async.sqlite3").open())


@pytest.mark.parametrize(("setting", "kind"), [
    ("sqlite", SqliteStore), ("postgresql://u@h/db", PostgresStore), ("postgres://u@h/db", PostgresStore)])
def test_open_store_by_name(tmp_path: Path, setting: str, kind: type) -> None:
    assert isinstance(open_store(setting, tmp_path), kind)


def test_open_store_refuses_other_names(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match='unknown store \'redis://h\': "sqlite" or a postgresql:// URL'):
        open_store("redis://h", tmp_path)
