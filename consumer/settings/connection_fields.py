"""How the worker reaches the outside: Kafka, the image store, and its logs. Declared apart
from the assembly (consumer/settings/__init__.py) only to keep each module short."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings


class ConnectionFields(BaseSettings):
    # --- kafka ----------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Broker list, comma-separated host:port."
    )
    request_topic: str = Field("generation.requests", description="Topic of the requests.")
    priority_topic: str = Field(
        "generation.requests.priority",
        description=(
            "Requests that start before any request of REQUEST_TOPIC not yet running, even while "
            "the worker is busy (same contract, results on RESULT_TOPIC); empty: no priority lane."
        ),
    )
    result_topic: str = Field("generation.results", description="Topic of the results.")
    dlq_topic: str = Field(
        "generation.requests.dlq", description="Dead letters: events with no usable request_id."
    )
    # Contract 1.1: cancel commands in, progress events out.
    control_topic: str = Field(
        "generation.control",
        description="Control commands (cancel), keyed by the request_id they target (1.1).",
    )
    progress_topic: str = Field(
        "generation.progress", description="Progress events (1.1); empty disables them."
    )
    progress_interval_seconds: float = Field(
        0.25,
        ge=0,
        le=60,
        description=(
            "A request's progress events are coalesced over this long: at most one per "
            "interval goes, its newest; `finished` goes at once (before the result), after an "
            "event that went: a request answered within the interval gets none. 0: each at once."
        ),
    )
    cancel_retention_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long a cancel command for a request not seen yet is remembered.",
    )
    max_request_age_seconds: float = Field(
        0.0,
        ge=0,
        description=(
            "A request whose record (its timestamp) is older than this is answered expired "
            "(deadline_exceeded), like one past its deadline; 0 = off."
        ),
    )
    clock_skew_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "How far behind a producer's clock may be: record ages (MAX_REQUEST_AGE_SECONDS, "
            "CANCEL_RETENTION_SECONDS) measured from a producer's CreateTime count from this "
            "much later; none is needed on topics with LogAppendTime (the broker's clock)."
        ),
    )
    group_id: str = Field(
        "image-workers", description="Consumer group; all workers of a pool share it."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How the worker talks to the brokers."
    )
    kafka_sasl_mechanism: str | None = Field(None, description="SASL mechanism; unset: PLAIN.")
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for TLS.")
    kafka_enable_idempotence: bool = Field(
        True,
        description="Idempotent producer; falls back with a warning where the broker refuses it.",
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Group session timeout: a worker that died loses its partitions after it.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        description=(
            "How long the broker may hold a fetch that finds no records: an empty partition "
            "costs 1000/this fetch requests a second. Kafka answers as soon as records arrive; "
            "the embedded Tansu holds a fetch with an empty partition for the whole wait "
            "(`stack up` writes 10)."
        ),
    )
    kafka_max_request_size: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description=(
            "Largest record produced; 1 MiB fits a stock broker's message.max.bytes (a dead "
            "letter of a larger event keeps its first bytes)."
        ),
    )
    kafka_max_fetch_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest record the consumer can fetch (per partition).",
    )
    max_event_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Larger events are dead-lettered (event_too_large) without being parsed.",
    )
    keepalive_poll_seconds: float = Field(
        30.0,
        gt=0,
        description="While partitions are paused (all batch slots busy), poll this often.",
    )
    max_batch_size: int = Field(4, ge=1, description="Images per engine call; 1 = no batching.")
    max_batch_wait_ms: int = Field(
        10, ge=0, description="After a first request, wait this long for compatible companions."
    )
    max_batches_in_flight: int = Field(
        3,
        ge=1,
        description=(
            "Batches in flight at once: one generating, one on record and queued behind it (the "
            "engine never waits for its store writes), one uploading; a batch whose images are "
            "stored publishes its results beside the next ones."
        ),
    )
    batch_lookahead: int = Field(
        2,
        ge=0,
        description=(
            "Batches fetched ahead of a free slot (more pauses intake): the next batch started "
            "is the oldest one for a model already loaded, but the oldest is passed over at most "
            "3 times."
        ),
    )
    drain_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "Shutdown grace for running batches; then the rest is abandoned at the next "
            "denoising step, uncommitted, for redelivery."
        ),
    )
    io_threads: int = Field(
        4,
        ge=1,
        description=(
            "Threads for image encoding and uploads, each image on its own: at least the images "
            "of one batch (MAX_BATCH_SIZE), or a batch uploads in rounds while the engine waits "
            "for its slot."
        ),
    )

    # --- storage --------------------------------------------------------------------------------
    storage_backend: Literal["s3", "local"] = Field(
        "s3", description="An S3-compatible store, or local files under DATA_DIR/images."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint; unset: AWS.")
    s3_public_endpoint_url: str | None = Field(
        None,
        description=(
            "Endpoint presigned URLs are signed for, when clients reach the store under another "
            "name than the worker does."
        ),
    )
    s3_bucket: str = Field("images", description="Bucket of the images.")
    s3_region: str = Field("us-east-1", description="Region of the bucket.")
    s3_create_bucket: bool = Field(True, description="Create the bucket at startup if missing.")
    s3_key_prefix: str = Field(
        "",
        description="Prefix of object keys (<prefix>/<request_id>/<index>.png, .jpg or .webp).",
    )
    s3_presign_expiry_seconds: int = Field(
        3600,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "Lifetime of presigned URLs; without BASE_URL also the images' Cache-Control max-age "
            "(at most a day), so no cache keeps an image longer than its URL works."
        ),
    )
    aws_access_key_id: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        description="S3 access key; unset: boto3's default credential chain.",
    )
    aws_secret_access_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        description="S3 secret key (never logged); unset: boto3's default credential chain.",
    )
    png_compress_level: int = Field(
        1,
        ge=0,
        le=9,
        description=(
            "zlib level of the PNGs, written by libpng: 1 is fast (one row filter, zlib's RLE "
            "strategy); 2-9: libpng chooses each row's filter, slower and smaller."
        ),
    )
    storage_retry_max_backoff_seconds: float = Field(
        10.0, gt=0, description="Cap of the backoff between upload retries while the store is down."
    )

    # --- logging --------------------------------------------------------------------------------
    log_level: str = Field(
        "INFO",
        description="JSON logs on stderr, one line per finished request (with its stages_ms).",
    )
    log_prompts: bool = Field(False, description="Include prompts in the per-request log line.")
