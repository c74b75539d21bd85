"""SQS triggers against a plain aiobotocore loop, on the same moto server in the same run.

Drain: N messages are put on a queue, then drained by (a) a plain aiobotocore receive-and-delete
loop with the same number of concurrent loops as the trigger's maximum concurrency, and (b) the
daemon's SQS trigger running a no-op function, timed from the daemon's readiness until the queue is
empty. Rounds alternate; the ratio (trigger rate / plain rate) is taken per round, the median
reported.

Idle latency: with the trigger long-polling an empty queue, one message at a time; the time from
SendMessage to the invocation's start, as its metering record gives it.

Usage: python bench/sqs.py [--messages 2000] [--rounds 3] [--latency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

import boto3
from aiobotocore.session import get_session
from harness import headwater, percentile, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from moto_server import MotoServer

CONCURRENCY = 4
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def fill(sqs: Any, url: str, n: int) -> None:
    for start in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"i": i})} for i in range(start, min(n, start + 10))])


def left(sqs: Any, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


async def plain(endpoint: str, url: str, n: int) -> float:
    done = 0
    async with get_session().create_client("sqs", endpoint_url=endpoint, **KEYS) as client:
        async def loop() -> None:
            nonlocal done
            while done < n:
                got = (await client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                    WaitTimeSeconds=1)).get("Messages", [])
                if got:
                    await client.delete_message_batch(QueueUrl=url, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
                    done += len(got)
        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
        return time.perf_counter() - start


def trigger_toml(endpoint: str, url: str) -> str:
    return f"""
        [aws]
        endpoint_url = "{endpoint}"
        region = "us-east-1"
        access_key_id = "testing"
        secret_access_key = "testing"

        [[functions]]
        name = "noop"
        handler = "app.handler"
        code = "fn"
        max_workers = {CONCURRENCY}
        [[functions.triggers]]
        type = "sqs"
        queue_url = "{url}"
        maximum_concurrency = {CONCURRENCY}
    """


FILES = {"fn/app.py": "def handler(event, context):\n    return None\n"}


def through_trigger(endpoint: str, sqs: Any, url: str) -> float:
    with headwater(trigger_toml(endpoint, url), FILES):
        start = time.perf_counter()
        while left(sqs, url):
            time.sleep(0.02)
        return time.perf_counter() - start


def latency(endpoint: str, sqs: Any, url: str, count: int, metering: Path) -> list[float]:
    os.environ["HEADWATER_METERING_PATH"] = str(metering)
    out = []
    with headwater(trigger_toml(endpoint, url), FILES):
        time.sleep(1.0)  # the poller's first long poll is under way
        for _ in range(count):
            seen = len(metering.read_text().splitlines()) if metering.exists() else 0
            sent = time.time()
            sqs.send_message(QueueUrl=url, MessageBody="{}")
            while not metering.exists() or len(metering.read_text().splitlines()) <= seen:
                time.sleep(0.005)
            record = json.loads(metering.read_text().splitlines()[-1])
            started = datetime.fromisoformat(record["start"].replace("Z", "+00:00")).timestamp()
            out.append((started - sent) * 1000)
            time.sleep(0.1)
    del os.environ["HEADWATER_METERING_PATH"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=20)
    args = parser.parse_args()
    with MotoServer() as moto:
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, **KEYS)
        ratios, rows = [], []
        for r in range(args.rounds):
            url = sqs.create_queue(QueueName=f"drain{r}", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
            fill(sqs, url, args.messages)
            plain_s = asyncio.run(plain(moto.endpoint, url, args.messages))
            fill(sqs, url, args.messages)
            trigger_s = through_trigger(moto.endpoint, sqs, url)
            ratios.append(plain_s / trigger_s)
            rows.append([str(r + 1), f"{args.messages / plain_s:.0f}", f"{args.messages / trigger_s:.0f}",
                         f"{plain_s / trigger_s:.2f}"])
        print(table(["round", "plain loop msg/s", "trigger msg/s", "ratio"], rows))
        print(f"drain ratio, median of {args.rounds}: {median(ratios):.2f}")
        url = sqs.create_queue(QueueName="idle", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        with tempfile.TemporaryDirectory() as tmp:
            ms = latency(moto.endpoint, sqs, url, args.latency, Path(tmp) / "metering.jsonl")
        print(f"idle latency SendMessage → invocation start: p50 {percentile(ms, 0.5):.1f} ms, "
              f"p90 {percentile(ms, 0.9):.1f} ms ({len(ms)} messages)")
        sqs.close()


if __name__ == "__main__":
    main()
