"""One settings object for the whole worker, built once at startup and passed in.

Nothing in this project reads the environment at import time: `load_settings()` is called by the
entry points (worker, CLI, tests) and the resulting object is handed to every constructor.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from pydantic import SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from consumer.generation.engine.catalog import model_kind
from consumer.generation.engine.config import EngineConfig, LoraSource, cpu_offload_refusal
from consumer.settings.connection_fields import ConnectionFields
from consumer.settings.input_fields import InputFields
from consumer.settings.worker_fields import (
    _SHORT_KEY,
    MIN_API_KEY_LENGTH,
    CommaList,
    WorkerFields,
)
from schemas import RequestLimits

__all__ = ["MIN_API_KEY_LENGTH", "CommaList", "Settings", "load_settings"]

log = logging.getLogger(__name__)


def _split_commas(value: object) -> object:
    """Accept `a,b,c` (the seed's format) as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(ConnectionFields, InputFields, WorkerFields):
    """Every knob of the worker. Field names map to upper-case environment variables; the fields
    are declared in worker_fields.py (the worker itself) and connection_fields.py (Kafka, the
    store, logs), in the order the configuration reference lists them."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # A validation error would otherwise print what it was given: a refused API_KEY, or the
        # whole input (secrets included) for a check across settings.
        hide_input_in_errors=True,
    )

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _models_from_csv(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("model_revisions", "lora_revisions", mode="before")
    @classmethod
    def _revisions_from_csv(cls, value: object, info: ValidationInfo) -> object:
        """`id=revision,id=revision` (ids never hold `=` or `,`; revisions neither)."""
        return _pairs(value, str(info.field_name).upper(), bare=False)

    @field_validator("allowed_loras", mode="before")
    @classmethod
    def _loras_from_csv(cls, value: object) -> object:
        """`name=source,name` (a bare name is its own source)."""
        return _pairs(value, "ALLOWED_LORAS", bare=True)

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
        unknown = sorted(set(self.lora_revisions) - set(self.allowed_loras))
        if unknown:
            raise ValueError(f"LORA_REVISIONS pins adapters not in ALLOWED_LORAS: {unknown}")
        return self

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.require_api_key and not self.valid_api_keys():
            raise ValueError("REQUIRE_API_KEY is set but neither API_KEY nor API_KEYS is")
        if self.priority_topic and self.priority_topic in (self.request_topic, self.result_topic):
            raise ValueError("PRIORITY_TOPIC must differ from REQUEST_TOPIC and RESULT_TOPIC")
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
            input_prefix=self.input_prefix,
            allowed_loras=tuple(self.allowed_loras),
            max_loras_per_request=self.max_loras_per_request,
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
            loras={
                name: LoraSource(source, self.lora_revisions.get(name))
                for name, source in self.allowed_loras.items()
            },
            max_loras=self.max_loras_cache,
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


def _pairs(value: object, setting: str, *, bare: bool) -> object:
    """`key=value,key=value` as a dict; `bare`: a lone `key` maps to itself."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        key, sep, item = (part.strip() for part in entry.partition("="))
        if bare and not sep:
            item = key
        if not (key and item):
            raise ValueError(f"{setting}: {entry!r} is not name=value")
        pairs[key] = item
    return pairs


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
