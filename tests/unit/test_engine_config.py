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


def test_small_gpu_settings_reach_the_engine_config() -> None:
    settings = Settings(
        _env_file=None,
        data_dir=Path("/srv/data"),
        device="cuda",
        cpu_offload="sequential",
        vae_slicing=True,
        vae_tiling=True,
        attention_slicing="auto",
    )
    config = settings.engine_config()
    assert (config.cpu_offload, config.vae_slicing, config.vae_tiling) == ("sequential", True, True)
    assert config.attention_slicing == "auto"


@pytest.mark.parametrize(("env", "expected"), [("none", None), ("auto", "auto"), ("4", 4)])
def test_attention_slicing_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, expected: object
) -> None:
    monkeypatch.setenv("ATTENTION_SLICING", env)
    assert Settings(_env_file=None).engine_config().attention_slicing == expected


def test_memory_savers_are_off_by_default() -> None:
    config = Settings(_env_file=None).engine_config()
    assert config.cpu_offload == "none"
    assert (config.vae_slicing, config.vae_tiling, config.attention_slicing) == (False, False, None)


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_on_the_cpu_is_refused_at_start(mode: str) -> None:
    with pytest.raises(ValueError, match=f"CPU_OFFLOAD={mode} needs an accelerator"):
        Settings(_env_file=None, device="cpu", cpu_offload=mode)
    with pytest.raises(ValueError, match="needs an accelerator"):
        EngineConfig(models_dir=Path("m"), device="cpu", cpu_offload=mode)  # type: ignore[arg-type]
    # auto may find an accelerator: the engine decides when it is built (loading.py)
    assert Settings(_env_file=None, device="auto", cpu_offload=mode).cpu_offload == mode


def test_bad_memory_savers_are_refused() -> None:
    with pytest.raises(ValueError, match="ATTENTION_SLICING"):
        Settings(_env_file=None, attention_slicing=0)
    with pytest.raises(ValueError, match="cpu_offload"):
        Settings(_env_file=None, cpu_offload="disk")
    with pytest.raises(ValueError, match="attention_slicing"):
        EngineConfig(models_dir=Path("m"), attention_slicing=0)
    with pytest.raises(ValueError, match="cpu_offload"):
        EngineConfig(models_dir=Path("m"), cpu_offload="disk")  # type: ignore[arg-type]
