"""Credentials: bearer tokens, and AWS Signature Version 4 for the Lambda API.

Every comparison of a secret is constant-time (``hmac.compare_digest``), and no secret or
signature is ever logged.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl, quote

from multidict import CIMultiDictProxy


def bearer_ok(header: str, tokens: list[str]) -> bool:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    # aiohttp decodes header bytes that are not UTF-8 as surrogates: back to those bytes, which
    # match no token, rather than an error.
    given = presented.strip().encode(errors="surrogateescape")
    ok = False
    for token in tokens:  # every token is compared, so the time says nothing of which matched
        ok |= hmac.compare_digest(given, token.encode())
    return ok


# --- AWS Signature Version 4 -------------------------------------------------------------------

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60  # AWS refuses a signature more than 15 minutes from its clock
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),"
                   r"\s*Signature=([0-9a-f]{64})\s*$")


class Refused(Exception):
    """Why a request is not authenticated: ``code`` is the AWS error code, 403 in every case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def canonical_query(raw_query: str) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(raw_query, keep_blank_values=True))
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_request(method: str, raw_path: str, raw_query: str,
                      headers: CIMultiDictProxy[str], signed: list[str], payload_hash: str) -> str:
    # The path is URI-encoded once more, as AWS does for every service but S3.
    lines = [method, quote(raw_path or "/", safe="/~"), canonical_query(raw_query)]
    for name in signed:
        values = headers.getall(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    return "\n".join([*lines, "", ";".join(signed), payload_hash])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class SigV4(NamedTuple):
    """A SigV4 Authorization header whose key, date and form are checked; the signature itself
    waits for the payload's hash (``check``)."""

    secret: str
    amz_date: str
    scope: str  # DATE/REGION/SERVICE/aws4_request
    signed: list[str]
    signature: str

    def check(self, method: str, raw_path: str, raw_query: str, headers: CIMultiDictProxy[str],
              payload_hash: str) -> None:
        """Raise ``Refused`` unless the signature covers this request with this payload hash."""
        # The hash is always the body's real one: a claimed hash that differs (or
        # UNSIGNED-PAYLOAD) would let a replayed signature carry any body.
        if headers.get("X-Amz-Content-SHA256", payload_hash) != payload_hash:
            raise Refused("InvalidSignatureException",
                          "X-Amz-Content-SHA256 does not match the request body")
        request = canonical_request(method, raw_path, raw_query, headers, self.signed, payload_hash)
        date, region, service, _ = self.scope.split("/")
        try:
            to_sign = "\n".join([ALGORITHM, self.amz_date, self.scope,
                                 hashlib.sha256(request.encode()).hexdigest()]).encode()
            expected = hmac.new(signing_key(self.secret, date, region, service), to_sign,
                                hashlib.sha256).hexdigest()
        except UnicodeEncodeError:  # a scope or header no client could have signed
            raise Refused("IncompleteSignatureException", "The signed request is not valid") from None
        if not hmac.compare_digest(expected, self.signature) or "host" not in self.signed:
            raise Refused("InvalidSignatureException",
                          "The request signature we calculated does not match the signature you "
                          "provided. Check your AWS Secret Access Key and signing method.")


def parse_sigv4(headers: CIMultiDictProxy[str], keys: Mapping[str, str], now: float) -> SigV4:
    """What of a SigV4 signature can be checked before the body arrives: its form, its access
    key and its time. Raises ``Refused``."""
    m = _AUTH.match(headers.get("Authorization", ""))
    if m is None:
        raise Refused("IncompleteSignatureException",
                      "Authorization header requires a valid AWS4-HMAC-SHA256 signature")
    credential, signed_text, signature = m.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise Refused("IncompleteSignatureException",
                      "Credential must be KEY/DATE/REGION/SERVICE/aws4_request")
    key_id, date = parts[0], parts[1]
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise Refused("IncompleteSignatureException", "X-Amz-Date must be YYYYMMDDTHHMMSSZ") from None
    if abs(now - signed_at) > MAX_SKEW_S or not amz_date.startswith(date):
        raise Refused("InvalidSignatureException", "Signature expired: the request time is more "
                      "than 15 minutes from the server's")
    secret = keys.get(key_id)
    if secret is None:  # refused before the body: an unknown key costs the daemon nothing
        raise Refused("UnrecognizedClientException",
                      "The security token included in the request is invalid.")
    return SigV4(secret, amz_date, "/".join(parts[1:]), signed_text.split(";"), signature)


def claimed_hash(headers: CIMultiDictProxy[str]) -> str | None:
    """The payload hash a request states (X-Amz-Content-SHA256), if it is one: then its signature
    can be checked before its body is read."""
    value = headers.get("X-Amz-Content-SHA256", "")
    return value if _HASH.fullmatch(value) else None


_HASH = re.compile(r"[0-9a-f]{64}")
