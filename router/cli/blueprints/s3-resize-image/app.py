"""Make a thumbnail of each image uploaded to a bucket: the classic ResizeImage function.

Thumbnails go to the bucket ``<source bucket>-resized``, or to THUMBNAIL_BUCKET if it is set. With
THUMBNAIL_PREFIX (say ``out/``) they go to the source bucket instead, the key's first folder (the
trigger's prefix, say ``in/``) replaced by it. Never write them where the trigger looks: each
thumbnail would trigger this function again.
"""

import io
import os
from urllib.parse import unquote_plus

import boto3
from PIL import Image

# Created once per environment and reused by every invocation it serves.
s3 = boto3.client("s3")

SIZE = (128, 128)


def resize_image(data):
    with Image.open(io.BytesIO(data)) as image:
        image_format = image.format
        image.thumbnail(SIZE)
        out = io.BytesIO()
        image.save(out, format=image_format)
    return out.getvalue(), Image.MIME.get(image_format, "application/octet-stream")


def handler(event, context):
    written = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        # S3 form-URL-encodes the key in notifications: "my photo.jpg" arrives as "my+photo.jpg".
        key = unquote_plus(record["s3"]["object"]["key"])
        prefix = os.environ.get("THUMBNAIL_PREFIX")
        if prefix:
            target, out_key = bucket, prefix + key.partition("/")[2]
        else:
            target, out_key = os.environ.get("THUMBNAIL_BUCKET") or f"{bucket}-resized", key
        original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        thumbnail, content_type = resize_image(original)
        s3.put_object(Bucket=target, Key=out_key, Body=thumbnail, ContentType=content_type)
        written.append(out_key)
    return written
