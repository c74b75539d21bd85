"""Process a batch of SQS messages whose bodies are JSON, reporting the bad ones.

The response lists the messages that failed; SQS deletes the rest and makes only those visible
again. The event source mapping must have ``FunctionResponseTypes: ["ReportBatchItemFailures"]``,
or the response is ignored and the whole batch counts as processed.
"""

import json
import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def process_message(message):
    logger.info("processed %s", message)


def handler(event, context):
    failures = []
    for record in event["Records"]:
        try:
            message = json.loads(record["body"])
        except json.JSONDecodeError:
            logger.warning("message %s: body is not JSON", record["messageId"])
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        process_message(message)
    return {"batchItemFailures": failures}
