"""Where the embedded Tansu broker keeps its data when it must survive a restart: an S3 bucket.

Tansu reads the S3 endpoint and credentials from AWS_* environment variables (object_store's
names), so they go into the broker's environment only: never onto its command line, which the
pid file records, nor into a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# create_bucket answers with one of these when the bucket is already there: fine for us.
_BUCKET_EXISTS = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


@dataclass(frozen=True)
class S3Storage:
    """An S3 bucket for Tansu's `s3://BUCKET/` storage engine."""

    endpoint_url: str
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"

    @property
    def engine_url(self) -> str:
        """The --storage-engine value: the bucket's name only, no secret."""
        return f"s3://{self.bucket}/"

    def environment(self) -> dict[str, str]:
        """The variables Tansu's S3 client reads."""
        return {
            "AWS_ENDPOINT": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",  # the embedded SeaweedFS speaks plain http on 127.0.0.1
        }

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; Tansu does not create it. At most ~3 x 13 s."""
        try:
            self.client().create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _BUCKET_EXISTS:
                raise

    def client(self) -> Any:
        """A boto3 S3 client on this bucket's endpoint with short, bounded timeouts."""
        config = Config(
            connect_timeout=3,
            read_timeout=10,
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=config,
        )
