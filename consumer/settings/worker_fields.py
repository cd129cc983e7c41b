"""The worker's own settings: the seed's variables, the engine, and the request limits. Declared
apart from the assembly (consumer/settings/__init__.py) only to keep each module short; their
order here is the configuration reference's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, ByteSize, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode

CommaList = Annotated[list[str], NoDecode]


# A purge key is a password that anyone who reaches the sidecar may guess at (five guesses a
# minute per address): short ones are refused at start. The message names the setting only.
MIN_API_KEY_LENGTH = 16
_SHORT_KEY = (
    "{name} is shorter than "
    + str(MIN_API_KEY_LENGTH)
    + " characters: use a long random key (e.g. `openssl rand -hex 24`)"
)


class WorkerFields(BaseSettings):
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
