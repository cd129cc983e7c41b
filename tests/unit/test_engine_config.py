"""The engine's own config: built from the settings, holding only what the engines use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consumer.generation.engine import EngineConfig
from consumer.settings import Settings


def test_settings_build_the_engine_config() -> None:
    settings = Settings(
        _env_file=None,
        data_dir=Path("/srv/data"),
        device="cpu",
        torch_threads=3,
        torch_compile=True,
        fp16_vae="madebyollin/sdxl-vae-fp16-fix",
        hf_hub_offline=True,
        hub_probe_timeout_seconds=0.5,
        max_models_cache=2,
        model_retry_seconds=5,
        model_cache_max_bytes="12GiB",
    )
    assert settings.engine_config() == EngineConfig(
        models_dir=Path("/srv/data/models"),
        device="cpu",
        torch_threads=3,
        torch_compile=True,
        fp16_vae="madebyollin/sdxl-vae-fp16-fix",
        offline=True,
        hub_probe_timeout_seconds=0.5,
        max_models=2,
        model_retry_seconds=5,
        max_cache_bytes=12 * 2**30,
    )


def test_engine_config_is_frozen_and_checked() -> None:
    config = EngineConfig(models_dir=Path("m"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_models = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_models"):
        EngineConfig(models_dir=Path("m"), max_models=0)
