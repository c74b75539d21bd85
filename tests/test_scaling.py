"""Table tests of the scaling policy ``router.run.scaling.plan`` with a fake clock."""

from __future__ import annotations

import pytest

from router.run.scaling import Decision, Snapshot, fair_shares, plan

NOW = 10_000.0  # the fake clock: ``Snapshot.now``, in monotonic seconds


def snap(*, queued: int = 0, busy: int = 0, starting: int = 0, idle: tuple[float, ...] = (),
         min_workers: int = 0, max_workers: int = 4, keep_warm_s: float = 300.0,
         now: float = NOW, global_room: int = 1 << 30) -> Snapshot:
    """A snapshot; ``idle`` holds how many seconds before ``now`` each idle worker went idle."""
    return Snapshot(queued=queued, busy=busy, starting=starting,
                    idle_since=tuple(now - ago for ago in idle), min_workers=min_workers,
                    max_workers=max_workers, keep_warm_s=keep_warm_s, now=now,
                    global_room=global_room)


@pytest.mark.parametrize(("snapshot", "want"), [
    # Nothing to do.
    (snap(), Decision()),
    (snap(busy=2), Decision()),
    (snap(idle=(10.0, 5.0)), Decision()),
    # Scale out on queue depth: one worker per queued invocation.
    (snap(queued=1), Decision(start=1)),
    (snap(queued=3), Decision(start=3)),
    (snap(queued=2, busy=1), Decision(start=2)),
    # ... capped at max_workers, counting every live worker.
    (snap(queued=10), Decision(start=4)),
    (snap(queued=10, busy=3), Decision(start=1)),
    (snap(queued=10, busy=4), Decision()),
    (snap(queued=10, busy=2, starting=2), Decision()),
    (snap(queued=5, busy=10, max_workers=4), Decision()),  # over the cap already
    (snap(queued=100, max_workers=1000), Decision(start=100)),
    # Starting workers will take queued invocations: do not start them twice.
    (snap(queued=3, starting=3), Decision()),
    (snap(queued=3, starting=1), Decision(start=2)),
    (snap(queued=1, starting=2), Decision()),
    # Idle workers take queued invocations too.
    (snap(queued=3, idle=(1.0,)), Decision(start=2)),
    (snap(queued=2, idle=(1.0, 1.0)), Decision()),
    (snap(queued=3, starting=1, idle=(1.0,)), Decision(start=1)),
    # The min_workers floor is started with no traffic.
    (snap(min_workers=2), Decision(start=2)),
    (snap(min_workers=2, busy=1), Decision(start=1)),
    (snap(min_workers=2, starting=2), Decision()),
    (snap(min_workers=2, idle=(1.0,)), Decision(start=1)),
    (snap(min_workers=3, busy=5), Decision()),
    # ... and traffic beyond the floor asks for the larger of the two.
    (snap(min_workers=2, queued=3), Decision(start=3)),
    (snap(min_workers=3, queued=1), Decision(start=3)),
    # ... still capped (a config with min > max is rejected, but plan stays within max).
    (snap(min_workers=5, max_workers=2), Decision(start=2)),
    # max_workers = 0: the function never runs.
    (snap(queued=5, max_workers=0), Decision()),
    (snap(queued=0, max_workers=0), Decision()),
])
def test_scale_out(snapshot: Snapshot, want: Decision) -> None:
    assert plan(snapshot) == want


@pytest.mark.parametrize(("snapshot", "want"), [
    # Idle at least keep_warm_s: stopped, oldest first (indexes into idle_since).
    (snap(idle=(300.0,)), Decision(stop=(0,))),
    (snap(idle=(299.999,)), Decision()),
    (snap(idle=(301.0,)), Decision(stop=(0,))),
    (snap(idle=(500.0, 400.0, 299.0)), Decision(stop=(0, 1))),
    (snap(idle=(500.0, 400.0, 300.0)), Decision(stop=(0, 1, 2))),
    (snap(idle=(100.0, 50.0)), Decision()),
    # Busy and starting workers are not stopped, only idle ones.
    (snap(busy=3, starting=1, idle=(400.0,)), Decision(stop=(0,))),
    # Never below min_workers: the oldest above the floor go first.
    (snap(min_workers=1, idle=(500.0, 400.0, 350.0)), Decision(stop=(0, 1))),
    (snap(min_workers=2, idle=(500.0, 400.0, 350.0)), Decision(stop=(0,))),
    (snap(min_workers=3, idle=(500.0, 400.0, 350.0)), Decision()),
    (snap(min_workers=4, max_workers=4, idle=(500.0, 400.0, 350.0)), Decision(start=1)),
    # ... busy and starting workers count toward the floor.
    (snap(min_workers=2, busy=1, idle=(500.0, 400.0)), Decision(stop=(0,))),
    (snap(min_workers=2, busy=2, idle=(500.0, 400.0)), Decision(stop=(0, 1))),
    (snap(min_workers=2, starting=1, idle=(500.0, 400.0)), Decision(stop=(0,))),
    # Not while invocations are queued.
    (snap(queued=1, busy=4, idle=(500.0,), max_workers=5), Decision()),
    (snap(queued=2, idle=(500.0,), max_workers=4), Decision(start=1)),
    # keep_warm_s = 0: an idle worker is stopped at once.
    (snap(keep_warm_s=0.0, idle=(0.0, 0.0)), Decision(stop=(0, 1))),
    (snap(keep_warm_s=0.0, min_workers=1, idle=(0.0, 0.0)), Decision(stop=(0,))),
    # max_workers = 0 with workers left over (the config was lowered): they go.
    (snap(max_workers=0, idle=(400.0,)), Decision(stop=(0,))),
])
def test_scale_in(snapshot: Snapshot, want: Decision) -> None:
    assert plan(snapshot) == want


@pytest.mark.parametrize(("now", "want"), [
    (1_000.0, Decision()),
    (1_199.999, Decision()),
    (1_200.0, Decision(stop=(0,))),  # the first worker reaches keep_warm_s
    (1_249.0, Decision(stop=(0,))),
    (1_250.0, Decision(stop=(0, 1))),
    (1_300.0, Decision(stop=(0, 1))),  # the third stays: it is the floor
    (1e9, Decision(stop=(0, 1))),
])
def test_fake_clock(now: float, want: Decision) -> None:
    # Given three idle workers that went idle at t=900, 950 and 990 and a floor of one
    snapshot = Snapshot(queued=0, busy=0, starting=0, idle_since=(900.0, 950.0, 990.0),
                        min_workers=1, max_workers=4, keep_warm_s=300.0, now=now)

    # Then the policy depends only on the clock passed in
    assert plan(snapshot) == want


def test_plan_converges() -> None:
    """Applying each decision until there is nothing to do never over-starts or stops the floor."""
    busy, starting, idle = 0, 0, [0.0, 0.0, 0.0, 0.0, 0.0]
    for now in (100.0, 200.0, 400.0, 500.0):
        decision = plan(Snapshot(queued=0, busy=busy, starting=starting, idle_since=tuple(idle),
                                 min_workers=2, max_workers=8, keep_warm_s=300.0, now=now))
        idle = [since for i, since in enumerate(idle) if i not in decision.stop]
        starting += decision.start
    assert (starting, idle) == (0, [0.0, 0.0])


@pytest.mark.parametrize(("snapshot", "want"), [
    # The daemon-wide room bounds scale-out below the function's own cap.
    (snap(queued=10, global_room=2), Decision(start=2)),
    (snap(queued=10, global_room=0), Decision()),
    (snap(queued=1, global_room=5), Decision(start=1)),
    # A cap that shrank below the live workers (a smaller fair share) sheds idle workers at once,
    # oldest first, whatever their idle time, and never below the floor.
    (snap(busy=2, idle=(1.0, 0.5), max_workers=2), Decision(stop=(0, 1))),
    (snap(busy=1, idle=(1.0, 0.5), max_workers=2), Decision(stop=(0,))),
    (snap(busy=3, idle=(1.0,), max_workers=2), Decision(stop=(0,))),
    (snap(idle=(1.0, 0.5), max_workers=1, min_workers=2), Decision()),
    # ... then keep-warm expiry applies to the rest.
    (snap(idle=(400.0, 350.0, 1.0), max_workers=2), Decision(stop=(0, 1))),
])
def test_global_room_and_shrunk_cap(snapshot: Snapshot, want: Decision) -> None:
    assert plan(snapshot) == want


@pytest.mark.parametrize(("demand", "capacity", "want"), [
    ({}, 8, {}),
    ({"a": 5}, 8, {"a": 5}),
    ({"a": 100}, 8, {"a": 8}),
    # Equal floods split evenly.
    ({"a": 100, "b": 100}, 8, {"a": 4, "b": 4}),
    # A small demand is met in full; the rest goes to the large one.
    ({"a": 100, "b": 2}, 8, {"a": 6, "b": 2}),
    ({"a": 0, "b": 9}, 4, {"a": 0, "b": 4}),
    # What integer division leaves over goes to the largest demands.
    ({"a": 3, "b": 3, "c": 3}, 8, {"a": 2, "b": 3, "c": 3}),
    ({"a": 10, "b": 10, "c": 10}, 4, {"a": 1, "b": 1, "c": 2}),
    # Under capacity: everyone gets their demand.
    ({"a": 1, "b": 2, "c": 3}, 64, {"a": 1, "b": 2, "c": 3}),
])
def test_fair_shares(demand: dict[str, int], capacity: int, want: dict[str, int]) -> None:
    shares = fair_shares(demand, capacity)
    assert shares == want
    assert sum(shares.values()) == min(capacity, sum(demand.values()))
