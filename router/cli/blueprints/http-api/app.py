"""Answer an API Gateway HTTP API (payload 2.0) or function URL request with JSON."""

import json


def handler(event, context):
    body = {
        "method": event["requestContext"]["http"]["method"],
        "path": event["rawPath"],
        "pathParameters": event.get("pathParameters", {}),
        "query": event.get("queryStringParameters", {}),
        "requestId": context.aws_request_id,
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
