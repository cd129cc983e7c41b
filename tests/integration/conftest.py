from __future__ import annotations

from pathlib import Path

import pytest

from consumer.settings import Settings


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DATA_DIR per test session, so the tiny model is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def engine_settings(shared_data_dir: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=shared_data_dir,
        default_model="tiny-sdxl",
        allowed_models=["tiny-sdxl", "stabilityai/sdxl-turbo"],
        hf_hub_offline=True,
        torch_threads=2,
        generation_timeout_seconds=60,
    )
