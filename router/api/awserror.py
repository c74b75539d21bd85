"""Errors in the wire format of AWS's rest-json APIs, which boto3 and the AWS CLI parse.

The code travels in the ``x-amzn-ErrorType`` header and the message in the JSON body. Lambda spells
the message key ``Message`` for some errors and ``message`` for the rest; the clients read either.
"""

from __future__ import annotations

import json

from aiohttp import web

_CAPITAL_MESSAGE = {"ResourceNotFoundException", "ServiceException"}


def aws_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
              **fields: str) -> web.Response:
    key = "Message" if code in _CAPITAL_MESSAGE else "message"
    body = {"Type": "User" if status < 500 else "Service", key: message, **fields}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json",
                        headers={"x-amzn-ErrorType": code, **(headers or {})})
