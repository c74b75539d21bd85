"""Credentials: bearer tokens, and AWS Signature Version 4 for the Lambda API.

Every comparison of a secret is constant-time (``hmac.compare_digest``), and no secret or
signature is ever logged.
"""

from __future__ import annotations

import hmac


def bearer_ok(header: str, tokens: list[str]) -> bool:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    ok = False
    for token in tokens:  # every token is compared, so the time says nothing of which matched
        ok |= hmac.compare_digest(presented.strip().encode(), token.encode())
    return ok
