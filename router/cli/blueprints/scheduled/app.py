"""Run on a schedule (an EventBridge rule such as ``rate(5 minutes)`` or ``cron(0 12 * * ? *)``)."""

import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    logger.info("scheduled run at %s by %s", event["time"], ", ".join(event["resources"]))
    return {"ran_at": event["time"]}
