"""Lambda's retry policy for asynchronous invocation, as pure functions of an event's history.

A function error (the function ran and failed: an exception, a timeout, a crash, out of memory)
is retried up to ``max_retry_attempts`` times (0–2, default 2), about one minute after the first
failure and two after the second. A throttle or a system error (the function did not run) puts
the event back with a backoff that doubles from 1 second to 5 minutes, for as long as the event
is younger than ``max_event_age_s`` (60–21,600 s, default 6 hours). An event that would be
retried past its age, or that is found too old when it is claimed, ends with ``EventAgeExceeded``;
one whose retries are spent, with ``RetriesExhausted``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

# How an attempt ended, for the policy: what Lambda distinguishes, not how the worker died.
Kind = Literal["success", "function_error", "throttle", "system_error"]
Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]

MAX_RETRY_ATTEMPTS = (0, 2)
MAX_EVENT_AGE_S = (60, 21600)


class RetryPolicy(Struct, frozen=True, forbid_unknown_fields=True):
    max_retry_attempts: Annotated[int, Meta(ge=MAX_RETRY_ATTEMPTS[0], le=MAX_RETRY_ATTEMPTS[1])] = 2
    max_event_age_s: Annotated[int, Meta(ge=MAX_EVENT_AGE_S[0], le=MAX_EVENT_AGE_S[1])] = 21600
    # The waits after the first and the second function error (Lambda's 1 and 2 minutes).
    retry_delays_s: tuple[Annotated[float, Meta(ge=0)], Annotated[float, Meta(ge=0)]] = (60.0, 120.0)
    backoff_base_s: Annotated[float, Meta(gt=0)] = 1.0
    backoff_max_s: Annotated[float, Meta(gt=0)] = 300.0


class Retry(Struct, frozen=True):
    due_at: float


class Finish(Struct, frozen=True):
    condition: Condition


Decision = Retry | Finish


def kind_of(status: str) -> Kind:
    """An Outcome's status as the policy sees it: a throttle did not run; everything else that
    is not a success ran and failed."""
    if status == "success":
        return "success"
    return "throttle" if status == "throttled" else "function_error"


def backoff_s(policy: RetryPolicy, requeues: int) -> float:
    """The wait before the next try after ``requeues`` earlier throttles or system errors."""
    return min(policy.backoff_max_s, policy.backoff_base_s * 2.0 ** min(requeues, 64))


def too_old(policy: RetryPolicy, received_at: float, now: float) -> bool:
    return now - received_at > policy.max_event_age_s


def decide(policy: RetryPolicy, kind: Kind, *, invokes: int, requeues: int, received_at: float,
           now: float) -> Decision:
    """What follows an attempt that ended as ``kind`` at ``now``. ``invokes`` counts the times
    the function ran, this attempt included; ``requeues`` the throttles and system errors before
    this attempt."""
    if kind == "success":
        return Finish("Success")
    if kind == "function_error":
        if invokes > policy.max_retry_attempts:
            return Finish("RetriesExhausted")
        due = now + policy.retry_delays_s[invokes - 1]
    else:
        due = now + backoff_s(policy, requeues)
    if too_old(policy, received_at, due):
        return Finish("EventAgeExceeded")
    return Retry(due)
