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

from consumer.generation.engine.catalog import model_kind
from consumer.generation.engine.config import EngineConfig, cpu_offload_refusal
from schemas import RequestLimits

log = logging.getLogger(__name__)

CommaList = Annotated[list[str], NoDecode]


# A purge key is a password that anyone who reaches the sidecar may guess at (five guesses a
# minute per address): short ones are refused at start. The message names the setting only.
MIN_API_KEY_LENGTH = 16
_SHORT_KEY = (
    "{name} is shorter than "
    + str(MIN_API_KEY_LENGTH)
    + " characters: use a long random key (e.g. `openssl rand -hex 24`)"
)


def _split_commas(value: object) -> object:
    """Accept `a,b,c` (the seed's format) as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the worker. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # A validation error would otherwise print what it was given: a refused API_KEY, or the
        # whole input (secrets included) for a check across settings.
        hide_input_in_errors=True,
    )

    # --- seed variables -------------------------------------------------------------------------
    app_port: int = Field(
        8001, ge=0, le=65535, description="Port of the aiohttp sidecar; 0: no sidecar."
    )
    app_host: str = Field(
        "127.0.0.1", description="Interface the sidecar binds to (0.0.0.0 in containers)."
    )
    data_dir: Path = Field(Path("data"), description="Models built here, local images, stack data.")
    base_url: str | None = Field(
        None,
        description=(
            "Public URL prefix of stored images (BASE_URL/<key>), which caches may keep for a "
            "day (Cache-Control max-age=86400); unset: presigned URLs."
        ),
    )
    default_model: str = Field(
        "stabilityai/sdxl-turbo",
        description="Model used when a request names none; always allowed.",
    )
    model_id: str | None = Field(
        None, description="Deprecated alias of DEFAULT_MODEL (logs a warning)."
    )
    allowed_models: CommaList = Field(
        default_factory=list,
        description="Allowlist of the models requests may name: hub ids, tiny-sdxl, local folders.",
    )
    model_revisions: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description=(
            "Hub models pinned to a revision (a commit sha, a tag, a branch): "
            "`id=revision,id=revision`, each id one of ALLOWED_MODELS (DEFAULT_MODEL included); "
            "loaded with from_pretrained(revision=...), shown in /v1/models, embedded in each "
            "image's parameters and part of the parameter digest. Local folders and tiny-sdxl "
            "ignore theirs. Unpinned hub models load what the hub's main branch holds."
        ),
    )
    max_models_cache: int = Field(
        1, ge=1, description="Pipelines kept loaded (LRU; one in use is never evicted)."
    )
    model_cache_max_bytes: ByteSize = Field(
        ByteSize(0),
        description=(
            "Memory budget of the loaded pipelines' weights (parameters and buffers), in bytes or "
            "with a unit (12GiB, 16GB): idle least-recently-used models are unloaded before a "
            "load to make room (by the model's size when last loaded), else right after it; one "
            "model is always allowed, whatever its size; 0 = only MAX_MODELS_CACHE counts. "
            "Loaded bytes show in /health."
        ),
    )
    model_retry_seconds: float = Field(
        60.0,
        ge=0,
        description=(
            "After a failed load (missing, download failed, a corrupt file), requests for that "
            "model fail at once with model_unavailable for this long instead of trying again (not "
            "after a load that ran out of memory); 0 = retry at once. POST /v1/models/purge "
            "forgets it. A default model that failed to load is tried again this often (at "
            "least every second) until it loads."
        ),
    )
    require_api_key: bool = Field(
        False, description="Protect POST /v1/models/purge with API_KEY or API_KEYS."
    )
    api_key: SecretStr | None = Field(
        None,
        description=(
            f"An accepted API key (never logged); at least {MIN_API_KEY_LENGTH} characters, "
            "else the worker does not start."
        ),
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            f"More accepted API keys (never logged), comma-separated; each at least "
            f"{MIN_API_KEY_LENGTH} characters."
        ),
    )
    purge_min_interval_seconds: float = Field(
        10.0,
        ge=0,
        description=(
            "At most one POST /v1/models/purge per this many seconds (else 429 with Retry-After)."
        ),
    )
    generation_timeout_seconds: float = Field(
        120.0,
        ge=0,
        description=(
            "Per engine call, checked between denoising steps (a call that compiles, with "
            "TORCH_COMPILE: counted from the end of its first step); 0 = off."
        ),
    )
    # The watchdog: past these, the worker reports unhealthy and exits non-zero (see watchdog.py).
    engine_grace_seconds: float = Field(
        60.0,
        gt=0,
        description=(
            "Watchdog: an engine call without a denoising step for GENERATION_TIMEOUT_SECONDS + "
            "this (counted from its start, after its model load, then from each step's end) "
            "counts as hung: a call that keeps stepping ends with timeout, only one step (or the "
            "decode) that alone takes that long is a hang."
        ),
    )
    model_load_timeout_seconds: float = Field(
        900.0,
        gt=0,
        description=(
            "Watchdog: a model load (a hub download included), the engine's build, or a "
            "compilation (TORCH_COMPILE: the first call of each shape, until its first step "
            "ends) longer than this counts as hung."
        ),
    )
    max_poll_age_seconds: float = Field(
        120.0,
        gt=0,
        description="Watchdog: an intake loop that has not moved for this long counts as stalled.",
    )
    unhealthy_exit_grace_seconds: float = Field(
        5.0,
        ge=0,
        description=(
            "Once unhealthy: /health answers 503 and finished work is published for this long, "
            "then the process exits with code 70."
        ),
    )
    store_check_interval_seconds: float = Field(
        15.0, gt=0, description="How often readiness checks the image store."
    )
    metrics_enabled: bool = Field(True, description="Serve /metrics (Prometheus text).")

    # --- engine ---------------------------------------------------------------------------------
    engine: Literal["diffusers", "simulated"] = Field(
        "diffusers",
        description=(
            "diffusers: the models, with torch. simulated: no model and no torch, for load tests "
            "and capacity planning without a GPU (operations.md): each engine call sleeps "
            "SIMULATED_STEP_MS per denoising step for its whole batch and draws synthetic images "
            "from the seeds; every allowed model is accepted and none loaded; /v1/models and "
            "each result's audit.note say so."
        ),
    )
    simulated_step_ms: float = Field(
        50.0,
        ge=0,
        description=(
            "Simulated engine: milliseconds per denoising step of one engine call (a batch of up "
            "to MAX_BATCH_SIZE images): its rate is MAX_BATCH_SIZE images per steps x this."
        ),
    )
    simulated_load_ms: float = Field(
        1000.0,
        ge=0,
        description="Simulated engine: milliseconds one model load takes (watched as a load).",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the engine runs; fp16 on CUDA, fp32 elsewhere."
    )
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 = torch's default.")
    torch_compile: bool = Field(
        False,
        description=(
            "CUDA only: torch.compile the UNet (slow first call, and again for each new image "
            "size, batch or guidance, watched as a load; faster after; pair with WARMUP)."
        ),
    )
    fp16_vae: str | None = Field(
        None,
        description=(
            "CUDA only: an fp16-safe VAE, hub id or folder (madebyollin/sdxl-vae-fp16-fix); "
            "without it SDXL's VAE decodes in fp32."
        ),
    )
    cpu_offload: Literal["none", "model", "sequential"] = Field(
        "none",
        description=(
            "Small GPUs (operations.md): keep the pipeline in host memory and move it to the "
            "GPU piece by piece. model: each sub-model (text encoders, UNet, VAE) moved in when "
            "it runs, a moderate slowdown (transfers on every request); sequential: layer by "
            "layer, the least GPU memory and much slower. Needs an accelerator: refused at "
            "start on a CPU-only device."
        ),
    )
    vae_slicing: bool = Field(
        False,
        description=(
            "Small GPUs: the VAE decodes a batch one image at a time; saves the decode's peak "
            "memory for batches of several images, a little slower."
        ),
    )
    vae_tiling: bool = Field(
        False,
        description=(
            "Small GPUs: the VAE decodes images larger than its tile (1024 px for SDXL) in "
            "overlapping tiles, blended; bounds the decode's memory at large sizes, slower, "
            "and pixels differ slightly from an untiled decode."
        ),
    )
    attention_slicing: Literal["none", "auto"] | int = Field(
        "none",
        description=(
            "Small GPUs: none (torch's SDPA attention), auto (half the attention heads per "
            "slice: two passes) or a number of heads per slice: attention computed in slices, "
            "less memory, slower; with SDPA (torch 2) it rarely helps."
        ),
    )
    warmup: bool = Field(
        False,
        description=(
            "The engine is always built (torch's and diffusers' imports) and the default model "
            "loaded while the worker joins its group, with a 64x64 warm-up image; with WARMUP "
            "(and always on CUDA) it is 512x512 (kernels chosen, a compiled UNet compiled)."
        ),
    )
    join_after_warmup: bool = Field(
        False,
        description=(
            "Join the consumer group only once the default model is loaded and warm: a new "
            "replica takes partitions (and causes a rebalance) only when it can work, at the cost "
            "of a slower cold start (the load no longer overlaps the join); a default model that "
            "cannot be loaded keeps it out of the group, trying again every MODEL_RETRY_SECONDS."
        ),
    )
    ready_requires_model: bool = Field(
        True,
        description=(
            "/ready answers 503 until the default model is loaded and warmed up, with the "
            "reason of its last failed try; a failed load is tried again every "
            "MODEL_RETRY_SECONDS, and a request that loads it makes the worker ready too."
        ),
    )
    hf_hub_offline: bool = Field(
        False,
        validation_alias=AliasChoices("HF_HUB_OFFLINE"),
        description="Never contact the hub: uncached models fail at once (model_unavailable).",
    )
    hub_probe_timeout_seconds: float = Field(
        2.0, gt=0, description="Before a download, a quick reachability probe of the hub."
    )
    default_negative_prompt: str = Field(
        "nsfw, nudity, gore, violence, blood, weapon, hate symbol, low quality, blurry, deformed",
        description="Negative prompt of a request that has none (audit policy standard).",
    )

    # --- request limits -------------------------------------------------------------------------
    max_prompt_length: int = Field(
        2000, ge=1, description="Longest prompt and negative prompt, in characters."
    )
    min_image_size: int = Field(64, ge=8, description="Smallest width and height.")
    max_image_size: int = Field(
        2048, ge=8, le=2048, description="Largest width and height (at most 2048)."
    )
    min_steps: int = Field(1, ge=1, description="Fewest denoising steps a request may ask for.")
    max_steps: int = Field(50, ge=1, description="Most denoising steps a request may ask for.")
    max_cfg: float = Field(
        20.0, ge=0, description="Largest cfg (guidance scale) a request may ask for."
    )
    max_num_images: int = Field(4, ge=1, description="Most images per request.")
    max_request_cost: float = Field(
        500.0,
        ge=0,
        description=(
            "Budget per request, in default-request units; over it: rejected, violation "
            "too_expensive; 0 = none."
        ),
    )
    max_attempts: int = Field(
        3,
        ge=0,
        description=(
            "Crash-loop guard: a request that was running when a worker died this many times is "
            "answered attempts_exhausted without running; 0 = off."
        ),
    )
    reuse_stored_images: bool = Field(
        True, description="Answer a redelivered request from its stored images when they match."
    )
    max_batch_cost: float = Field(
        500.0,
        ge=0,
        description="Budget of one engine call: batching never groups requests past it; 0 = none.",
    )

    # --- kafka ----------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Broker list, comma-separated host:port."
    )
    request_topic: str = Field("generation.requests", description="Topic of the requests.")
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
        10,
        ge=0,
        description=(
            "How long a fetch may wait for records; on brokers that hold every fetch this long "
            "(the embedded Tansu) it bounds an idle worker's latency."
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
        2,
        ge=1,
        description=(
            "Batches generating or uploading at once (a batch whose images are stored publishes "
            "its results beside the next ones)."
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
        2,
        ge=1,
        description=(
            "Threads for image encoding and uploads, each image of a request on its own (more "
            "compete with torch on a CPU-only box; on a GPU host, the images per batch)."
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

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _models_from_csv(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("model_revisions", mode="before")
    @classmethod
    def _revisions_from_csv(cls, value: object) -> object:
        """`id=revision,id=revision` (ids never hold `=` or `,`; revisions neither)."""
        if not isinstance(value, str):
            return value
        revisions: dict[str, str] = {}
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            model_id, sep, revision = entry.partition("=")
            if not (sep and model_id.strip() and revision.strip()):
                raise ValueError(f"MODEL_REVISIONS: {entry!r} is not id=revision")
            revisions[model_id.strip()] = revision.strip()
        return revisions

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_csv(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("api_key")
    @classmethod
    def _api_key_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ValueError(_SHORT_KEY.format(name="API_KEY"))
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys_are_long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        for position, key in enumerate(value, start=1):
            if 0 < len(key.get_secret_value()) < MIN_API_KEY_LENGTH:
                name = f"API_KEYS (key {position} of {len(value)})"
                raise ValueError(_SHORT_KEY.format(name=name))
        return value

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
        unknown = sorted(set(self.model_revisions) - set(self.allowed_models))
        if unknown:
            raise ValueError(f"MODEL_REVISIONS pins models not in ALLOWED_MODELS: {unknown}")
        if self.require_api_key and not self.valid_api_keys():
            raise ValueError("REQUIRE_API_KEY is set but neither API_KEY nor API_KEYS is")
        if self.min_steps > self.max_steps:
            raise ValueError("MIN_STEPS must not exceed MAX_STEPS")
        if self.min_image_size > self.max_image_size:
            raise ValueError("MIN_IMAGE_SIZE must not exceed MAX_IMAGE_SIZE")
        if self.cpu_offload != "none" and self.device == "cpu":
            raise ValueError(cpu_offload_refusal(self.cpu_offload, "cpu"))
        if isinstance(self.attention_slicing, int) and self.attention_slicing < 1:
            raise ValueError("ATTENTION_SLICING must be none, auto or a slice size of at least 1")
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

    def pinned_revisions(self) -> dict[str, str]:
        """MODEL_REVISIONS of hub models only: local folders and tiny-sdxl have no revisions."""
        return {m: r for m, r in self.model_revisions.items() if model_kind(m) == "hub"}

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            models_dir=self.models_dir,
            engine=self.engine,
            device=self.device,
            torch_threads=self.torch_threads,
            torch_compile=self.torch_compile,
            fp16_vae=self.fp16_vae,
            cpu_offload=self.cpu_offload,
            vae_slicing=self.vae_slicing,
            vae_tiling=self.vae_tiling,
            attention_slicing=None if self.attention_slicing == "none" else self.attention_slicing,
            offline=self.hf_hub_offline,
            hub_probe_timeout_seconds=self.hub_probe_timeout_seconds,
            max_models=self.max_models_cache,
            max_cache_bytes=int(self.model_cache_max_bytes),
            model_retry_seconds=self.model_retry_seconds,
            simulated_step_ms=self.simulated_step_ms,
            simulated_load_ms=self.simulated_load_ms,
            model_revisions=self.pinned_revisions(),
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
    if isinstance(value, dict):
        return ",".join(f"{key}={_env_value(item)}" for key, item in value.items())
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
