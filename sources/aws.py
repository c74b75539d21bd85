"""AWS service clients for the pollers (aiobotocore), and the backoff when an endpoint fails.

One client per (service, endpoint, region), shared by every poller that uses it and closed at
shutdown. The credentials are [aws]'s when it has them, otherwise botocore's standard chain (the
daemon's environment, its shared credentials file). botocore's own retries are off: a poller
retries with its own capped, jittered backoff and shows its state meanwhile.
"""

from __future__ import annotations

import contextlib
from typing import Any

from router.config import AwsConfig

LONG_POLL_S = 20  # SQS's longest WaitTimeSeconds
BACKOFF_S = (0.5, 30.0)  # after an endpoint failure: the first wait's bound, the longest


def backoff_s(failures: int, rand: float) -> float:
    """How long to wait after the ``failures``-th failure in a row: "full jitter", a uniform draw
    (``rand`` in [0, 1)) below a bound that doubles from BACKOFF_S[0] up to BACKOFF_S[1], so that
    pollers of one broken endpoint do not retry in step."""
    first, most = BACKOFF_S
    return rand * min(most, first * 2 ** min(max(failures - 1, 0), 30))


class Clients:
    def __init__(self, aws: AwsConfig, default_region: str) -> None:
        self.aws = aws
        self.default_region = default_region
        self._session: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str, str], Any] = {}

    def where(self, endpoint_url: str, region: str) -> tuple[str, str]:
        """A trigger's endpoint and region, [aws]'s where it names none."""
        return (endpoint_url or self.aws.endpoint_url,
                region or self.aws.region or self.default_region)

    async def client(self, service: str, endpoint_url: str = "", region: str = "") -> Any:
        endpoint_url, region = self.where(endpoint_url, region)
        key = (service, endpoint_url, region)
        if key not in self._clients:
            # Imported at the first client, not with the daemon: aiobotocore (botocore's clients
            # and models) costs about a quarter of a second of start-up a daemon with no queue
            # trigger would pay for nothing.
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            if self._session is None:
                self._session = get_session()
            aws = self.aws
            keys: dict[str, str] = {}
            if aws.access_key_id:
                keys = {"aws_access_key_id": aws.access_key_id,
                        "aws_secret_access_key": aws.secret_access_key}
                if aws.session_token:
                    keys["aws_session_token"] = aws.session_token
            config = AioConfig(connect_timeout=5, read_timeout=LONG_POLL_S + 10,
                               retries={"max_attempts": 1, "mode": "standard"},
                               max_pool_connections=1000)
            self._clients[key] = await self._stack.enter_async_context(self._session.create_client(
                service, region_name=region, endpoint_url=endpoint_url or None, config=config, **keys))
        return self._clients[key]

    async def close(self) -> None:
        self._clients.clear()
        await self._stack.aclose()
