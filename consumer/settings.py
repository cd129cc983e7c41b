"""One settings object for the whole worker, built once at startup and passed in.

Nothing in this project reads the environment at import time: `load_settings()` is called by the
entry points (worker, CLI, tests) and the resulting object is handed to every constructor.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import load_dotenv
from pydantic import AliasChoices, ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from consumer.engine.config import EngineConfig
from schemas import RequestLimits

log = logging.getLogger(__name__)

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    """Accept `a,b,c` (the seed's format) as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the worker. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- seed variables -------------------------------------------------------------------------
    app_port: int = Field(8001, ge=0, le=65535, description="Port of the aiohttp sidecar.")
    app_host: str = Field("127.0.0.1", description="Interface the sidecar binds to.")
    data_dir: Path = Field(Path("data"), description="Models built here, local images, stack data.")
    base_url: str | None = Field(None, description="Public URL prefix of stored images.")
    default_model: str = Field("stabilityai/sdxl-turbo", description="Model used when none asked.")
    model_id: str | None = Field(None, description="Deprecated alias of DEFAULT_MODEL.")
    allowed_models: CommaList = Field(
        default_factory=list, description="Comma-separated allowlist."
    )
    max_models_cache: int = Field(1, ge=1, description="Pipelines kept loaded (LRU).")
    model_cache_max_bytes: ByteSize = Field(
        ByteSize(0),
        description="Memory budget of the loaded pipelines (bytes or e.g. 12GiB); 0 = none.",
    )
    model_retry_seconds: float = Field(
        60.0, ge=0, description="A model whose load failed is not tried again for this long."
    )
    require_api_key: bool = False
    api_key: SecretStr | None = None
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    purge_min_interval_seconds: float = Field(
        10.0, ge=0, description="At most one POST /v1/models/purge per this many seconds."
    )
    generation_timeout_seconds: float = Field(120.0, ge=0, description="0 disables the timeout.")
    # The watchdog: past these, the worker reports unhealthy and exits non-zero (see watchdog.py).
    engine_grace_seconds: float = Field(
        60.0, gt=0, description="Hard engine deadline = GENERATION_TIMEOUT_SECONDS + this."
    )
    model_load_timeout_seconds: float = Field(
        900.0, gt=0, description="Longest a model load (a hub download included) may take."
    )
    max_poll_age_seconds: float = Field(
        120.0, gt=0, description="Unhealthy when the intake loop has not moved for this long."
    )
    unhealthy_exit_grace_seconds: float = Field(
        5.0, ge=0, description="After the watchdog fires: time to publish finished work."
    )
    store_check_interval_seconds: float = Field(
        15.0, gt=0, description="How often readiness checks the image store."
    )
    metrics_enabled: bool = True

    # --- engine ---------------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 = all cores.")
    torch_compile: bool = Field(False, description="CUDA only: torch.compile the UNet.")
    fp16_vae: str | None = Field(None, description="CUDA only: an fp16-safe VAE id or folder.")
    warmup: bool = Field(
        False, description="Warm-up image at 512x512 (else 64x64) before ready; on CUDA always."
    )
    join_after_warmup: bool = Field(
        False,
        description="Join the consumer group only once the default model is loaded and warm.",
    )
    ready_requires_model: bool = Field(
        True, description="/ready waits until the default model is loaded (and warmed up)."
    )
    hf_hub_offline: bool = Field(False, validation_alias=AliasChoices("HF_HUB_OFFLINE"))
    hub_probe_timeout_seconds: float = Field(2.0, gt=0)
    default_negative_prompt: str = (
        "nsfw, nudity, gore, violence, blood, weapon, hate symbol, low quality, blurry, deformed"
    )

    # --- request limits -------------------------------------------------------------------------
    max_prompt_length: int = Field(2000, ge=1)
    min_image_size: int = Field(64, ge=8)
    max_image_size: int = Field(2048, ge=8, le=2048)
    min_steps: int = Field(1, ge=1)
    max_steps: int = Field(50, ge=1)
    max_cfg: float = Field(20.0, ge=0)
    max_num_images: int = Field(4, ge=1)
    max_request_cost: float = Field(
        500.0, ge=0, description="Budget per request, in default-request units; 0 = none."
    )
    max_attempts: int = Field(
        3,
        ge=0,
        description="Deliveries that killed a worker before a request is given up; 0 = off.",
    )
    reuse_stored_images: bool = Field(
        True, description="Answer a redelivered request from its stored images when they match."
    )
    max_batch_cost: float = Field(
        500.0, ge=0, description="Budget of one engine call (a batch); 0 = none."
    )

    # --- kafka ----------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    request_topic: str = "generation.requests"
    result_topic: str = "generation.results"
    dlq_topic: str = "generation.requests.dlq"
    # Contract 1.1: cancel commands in, progress events out.
    control_topic: str = Field("generation.control", description="Cancel commands (1.1).")
    progress_topic: str = Field(
        "generation.progress", description="Progress events (1.1); empty disables them."
    )
    cancel_retention_seconds: float = Field(
        3600.0, ge=0, description="How long a cancel command is remembered for its request_id."
    )
    max_request_age_seconds: float = Field(
        0.0, ge=0, description="Requests older than this (record timestamp) expire; 0 = off."
    )
    group_id: str = "image-workers"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_enable_idempotence: bool = True
    kafka_session_timeout_ms: int = Field(10_000, ge=1000)
    kafka_fetch_max_wait_ms: int = Field(
        10, ge=0, description="How long a fetch waits for records: the idle worker's latency."
    )
    kafka_max_request_size: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description="Largest record produced; 1 MiB fits a stock broker's message.max.bytes.",
    )
    kafka_max_fetch_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="Largest record the consumer can fetch."
    )
    max_event_bytes: int = Field(
        1024 * 1024, ge=1024, description="Larger events are dead-lettered without parsing."
    )
    keepalive_poll_seconds: float = Field(
        30.0, gt=0, description="While paused, poll this often (within max.poll.interval.ms)."
    )
    max_batch_size: int = Field(4, ge=1, description="Images per engine call; 1 = no batching.")
    max_batch_wait_ms: int = Field(10, ge=0)
    max_batches_in_flight: int = Field(2, ge=1, description="Generated batches awaiting upload.")
    batch_lookahead: int = Field(
        2, ge=0, description="Batches fetched ahead of a free slot (to prefer the loaded model)."
    )
    drain_timeout_seconds: float = Field(30.0, ge=0)
    io_threads: int = Field(
        2,
        ge=1,
        description="Threads for PNG encoding and uploads (more compete with torch on CPU).",
    )

    # --- storage --------------------------------------------------------------------------------
    storage_backend: Literal["s3", "local"] = "s3"
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "images"
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = True
    s3_key_prefix: str = Field("", description="Prefix of object keys inside the bucket.")
    s3_presign_expiry_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600)
    aws_access_key_id: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "aws_access_key_id")
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key")
    )
    png_compress_level: int = Field(
        1, ge=0, le=9, description="zlib level of the PNGs: 1 is fast, 9 is small."
    )
    storage_retry_max_backoff_seconds: float = Field(
        10.0, gt=0, description="Cap of the backoff between upload retries while the store is down."
    )

    # --- logging --------------------------------------------------------------------------------
    log_level: str = "INFO"
    log_prompts: bool = False

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _models_from_csv(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_csv(cls, value: object) -> object:
        return _split_commas(value)

    @model_validator(mode="after")
    def _resolve_models(self) -> Settings:
        if self.model_id and "default_model" not in self.model_fields_set:
            warnings.warn(
                "MODEL_ID is deprecated; set DEFAULT_MODEL instead",
                DeprecationWarning,
                stacklevel=2,
            )
            log.warning("MODEL_ID is deprecated; using it as DEFAULT_MODEL=%s", self.model_id)
            self.default_model = self.model_id
        if self.default_model not in self.allowed_models:
            self.allowed_models = [self.default_model, *self.allowed_models]
        if self.require_api_key and not self.valid_api_keys():
            raise ValueError("REQUIRE_API_KEY is set but neither API_KEY nor API_KEYS is")
        if self.min_steps > self.max_steps:
            raise ValueError("MIN_STEPS must not exceed MAX_STEPS")
        if self.min_image_size > self.max_image_size:
            raise ValueError("MIN_IMAGE_SIZE must not exceed MAX_IMAGE_SIZE")
        return self

    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            allowed_models=tuple(self.allowed_models),
            default_model=self.default_model,
            max_prompt_length=self.max_prompt_length,
            min_image_size=self.min_image_size,
            max_image_size=self.max_image_size,
            min_steps=self.min_steps,
            max_steps=self.max_steps,
            max_cfg=self.max_cfg,
            max_num_images=self.max_num_images,
            max_event_bytes=self.max_event_bytes,
            max_request_cost=self.max_request_cost,
        )

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            models_dir=self.models_dir,
            device=self.device,
            torch_threads=self.torch_threads,
            torch_compile=self.torch_compile,
            fp16_vae=self.fp16_vae,
            offline=self.hf_hub_offline,
            hub_probe_timeout_seconds=self.hub_probe_timeout_seconds,
            max_models=self.max_models_cache,
            max_cache_bytes=int(self.model_cache_max_bytes),
            model_retry_seconds=self.model_retry_seconds,
        )

    def valid_api_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_key is not None:
            keys.append(self.api_key.get_secret_value())
        return [k for k in keys if k]

    def to_env(self) -> dict[str, str]:
        """The settings as the environment variables a worker process reads back (secrets in
        clear: for handing to a child process, never for logs)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None or name == "model_id":
                continue
            env[name.upper()] = _env_value(value)
        return env

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


def _env_value(value: object) -> str:
    if isinstance(value, list):
        return ",".join(_env_value(item) for item in value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Build the settings at startup: `.env` is loaded into the process environment first so that
    libraries configured through standard variables (AWS_*, HF_*) see the same values."""
    if env_file is not None and Path(env_file).is_file():
        load_dotenv(env_file, override=False)
    return Settings(_env_file=env_file, **overrides)
