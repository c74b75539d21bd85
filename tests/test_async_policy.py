"""The pure parts of asynchronous invocation, as tables: Lambda's retry policy and backoff, how an
outcome counts, and the destination record."""

from __future__ import annotations

import json

import msgspec
import pytest

from router.asyncq.record import Response, destination_record
from router.asyncq.retry import (
    Finish,
    Kind,
    Retry,
    RetryPolicy,
    backoff_s,
    decide,
    kind_of,
    too_old,
)

LAMBDA = RetryPolicy()
NO_RETRIES = RetryPolicy(max_retry_attempts=0)
SHORT = RetryPolicy(max_event_age_s=60, retry_delays_s=(0.2, 0.4))
T0 = 1_800_000_000.0


@pytest.mark.parametrize(("policy", "kind", "invokes", "requeues", "age", "want"), [
    (LAMBDA, "success", 1, 0, 0, Finish("Success")),
    (LAMBDA, "success", 3, 5, 3000, Finish("Success")),
    # function errors: two retries, one and two minutes after the failures
    (LAMBDA, "function_error", 1, 0, 0, Retry(T0 + 60)),
    (LAMBDA, "function_error", 2, 0, 61, Retry(T0 + 61 + 120)),
    (LAMBDA, "function_error", 3, 0, 190, Finish("RetriesExhausted")),
    (LAMBDA, "function_error", 2, 4, 100, Retry(T0 + 100 + 120)),  # throttles do not use retries up
    (NO_RETRIES, "function_error", 1, 0, 0, Finish("RetriesExhausted")),
    (RetryPolicy(max_retry_attempts=1), "function_error", 2, 0, 60, Finish("RetriesExhausted")),
    (SHORT, "function_error", 1, 0, 0, Retry(T0 + 0.2)),
    (SHORT, "function_error", 2, 0, 1, Retry(T0 + 1 + 0.4)),
    # a retry that would come after the event's maximum age does not happen
    (SHORT, "function_error", 1, 0, 59.9, Finish("EventAgeExceeded")),
    (RetryPolicy(max_event_age_s=100), "function_error", 1, 0, 41, Finish("EventAgeExceeded")),
    (RetryPolicy(max_event_age_s=100), "function_error", 1, 0, 40, Retry(T0 + 100)),  # at the limit
    # throttles and system errors: backoff from 1 s, doubling, until the event is too old
    (LAMBDA, "throttle", 0, 0, 0, Retry(T0 + 1)),
    (LAMBDA, "throttle", 0, 1, 0, Retry(T0 + 2)),
    (LAMBDA, "system_error", 0, 4, 0, Retry(T0 + 16)),
    (LAMBDA, "throttle", 2, 8, 5000, Retry(T0 + 5000 + 256)),
    (LAMBDA, "throttle", 0, 9, 5000, Retry(T0 + 5000 + 300)),  # capped at five minutes
    (LAMBDA, "throttle", 0, 500, 5000, Retry(T0 + 5000 + 300)),
    (LAMBDA, "throttle", 0, 80, 21_400, Finish("EventAgeExceeded")),  # six hours are up
    (LAMBDA, "system_error", 0, 80, 21_300, Retry(T0 + 21_600)),
])
def test_decide(policy: RetryPolicy, kind: Kind, invokes: int, requeues: int, age: float,
                want: Retry | Finish) -> None:
    assert decide(policy, kind, invokes=invokes, requeues=requeues, received_at=T0, now=T0 + age) == want


def test_lambda_runs_a_failing_event_three_times() -> None:
    """The whole history of an always-failing event under Lambda's defaults."""
    now, invokes, waits = T0, 0, []
    while True:
        invokes += 1
        decision = decide(LAMBDA, "function_error", invokes=invokes, requeues=0, received_at=T0, now=now)
        if isinstance(decision, Finish):
            break
        waits.append(decision.due_at - now)
        now = decision.due_at
    assert (invokes, waits, decision) == (3, [60, 120], Finish("RetriesExhausted"))


@pytest.mark.parametrize(("requeues", "want"), [(0, 1), (1, 2), (2, 4), (8, 256), (9, 300), (10_000, 300)])
def test_backoff(requeues: int, want: float) -> None:
    assert backoff_s(LAMBDA, requeues) == want


@pytest.mark.parametrize(("age", "want"), [(0, False), (21_600, False), (21_600.01, True)])
def test_too_old(age: float, want: bool) -> None:
    assert too_old(LAMBDA, T0, T0 + age) is want


@pytest.mark.parametrize(("status", "kind"), [
    ("success", "success"), ("throttled", "throttle"), ("error", "function_error"),
    ("timeout", "function_error"), ("crash", "function_error"), ("oom", "function_error"),
])
def test_kind_of(status: str, kind: Kind) -> None:
    assert kind_of(status) == kind


@pytest.mark.parametrize("config", [
    {"max_retry_attempts": 3}, {"max_retry_attempts": -1}, {"max_event_age_s": 59},
    {"max_event_age_s": 21_601}, {"retry_delays_s": [1]}, {"retry_delays_s": [-1, 1]},
    {"backoff_base_s": 0}, {"maximum": 1},
])
def test_policy_refuses_what_lambda_refuses(config: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(config, RetryPolicy)


ARN = "arn:aws:lambda:us-east-1:000000000000:function:orders:$LATEST"
# Odd spacing, key order and escapes that a decode and re-encode would change.
PAYLOAD = b'{ "b":1,  "a":[1.50, "\\u00e9"], "\xc3\xa9": null }'


@pytest.mark.parametrize(("condition", "count", "response", "want"), [
    ("Success", 1, Response(b'{"ok": true}'),
     {"responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
      "responsePayload": {"ok": True}}),
    ("RetriesExhausted", 3, Response(b'{"errorMessage":"boom","errorType":"ValueError"}', "Unhandled"),
     {"responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
      "responsePayload": {"errorMessage": "boom", "errorType": "ValueError"}}),
    ("Success", 1, Response(b""), {"responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
                                  "responsePayload": None}),
    ("EventAgeExceeded", 0, None, {}),  # never ran: nothing to say of a response
])
def test_destination_record(condition: str, count: int, response: Response | None,
                            want: dict[str, object]) -> None:
    raw = destination_record(request_id="5f7c-id", function_arn=ARN, condition=condition,  # type: ignore[arg-type]
                             invoke_count=count, request_payload=PAYLOAD, response=response,
                             at=1_574_636_905.6519)
    assert PAYLOAD in raw  # spliced, not re-encoded
    assert json.loads(raw) == {
        "version": "1.0",
        "timestamp": "2019-11-24T23:08:25.651Z",
        "requestContext": {"requestId": "5f7c-id", "functionArn": ARN, "condition": condition,
                           "approximateInvokeCount": count},
        "requestPayload": json.loads(PAYLOAD),
        **want,
    }
