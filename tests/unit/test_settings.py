from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.settings import Settings, load_settings


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_defaults_fit_sdxl_turbo_and_the_default_model_is_allowed() -> None:
    settings = make()
    assert settings.default_model == "stabilityai/sdxl-turbo"
    assert settings.allowed_models == ["stabilityai/sdxl-turbo"]
    assert settings.app_port == 8001


def test_allowed_models_from_a_comma_list_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOWED_MODELS", "tiny-sdxl, /models/mine ,")
    monkeypatch.setenv("DEFAULT_MODEL", "tiny-sdxl")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.allowed_models == ["tiny-sdxl", "/models/mine"]


def test_model_id_is_a_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_ID", "tiny-sdxl")
    with pytest.warns(DeprecationWarning, match="MODEL_ID"):
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.default_model == "tiny-sdxl"
    assert "tiny-sdxl" in settings.allowed_models


def test_default_model_wins_over_model_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_ID", "old")
    monkeypatch.setenv("DEFAULT_MODEL", "new")
    assert Settings(_env_file=None).default_model == "new"  # type: ignore[call-arg]


def test_api_keys_and_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="REQUIRE_API_KEY"):
        make(require_api_key=True)
    a, b, c = ("a" * 16, "b" * 20, "c" * 32)
    monkeypatch.setenv("API_KEYS", f"{a},{b}")
    monkeypatch.setenv("API_KEY", c)
    settings = Settings(_env_file=None, require_api_key=True)  # type: ignore[call-arg]
    assert sorted(settings.valid_api_keys()) == [a, b, c]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"api_key": "fifteen-chars!!"}, "API_KEY is shorter than 16"),
        ({"api_keys": "long-enough-key-0001,fifteen-chars!!"}, "API_KEYS (key 2 of 2)"),
        ({"api_keys": ["fifteen-chars!!"], "require_api_key": True}, "API_KEYS (key 1 of 1)"),
    ],
)
def test_short_api_keys_are_refused_at_start_without_showing_them(
    values: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make(**values)
    assert named in str(refused.value)
    assert "fifteen-chars" not in str(refused.value)


def test_keys_of_16_characters_and_empty_keys_are_accepted() -> None:
    settings = make(api_key="", api_keys="sixteen-chars!!!")
    assert settings.valid_api_keys() == ["sixteen-chars!!!"]


def test_a_refused_setting_does_not_print_the_other_settings_secrets() -> None:
    """A check across settings fails on the whole input; its message must not echo it."""
    with pytest.raises(ValidationError) as refused:
        make(require_api_key=True, aws_secret_access_key="s3cr3t")
    assert "REQUIRE_API_KEY" in str(refused.value) and "s3cr3t" not in str(refused.value)


def test_secrets_stay_out_of_repr() -> None:
    settings = make(
        api_key="hunter2-hunter2-hunter2", aws_secret_access_key="s3cr3t", kafka_sasl_password="pw"
    )
    text = repr(settings) + str(settings) + settings.model_dump_json()
    assert "hunter2" not in text and "s3cr3t" not in text and "pw'" not in text


def test_env_file_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUP_ID", raising=False)
    env = tmp_path / "worker.env"
    env.write_text("GROUP_ID=from-file\nMAX_BATCH_SIZE=8\n")
    settings = load_settings(env)
    assert settings.group_id == "from-file" and settings.max_batch_size == 8


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        make(max_image_size=4096)
    with pytest.raises(ValidationError):
        make(min_steps=5, max_steps=2)
    limits = make(max_steps=8, allowed_models=["tiny-sdxl"]).request_limits()
    assert limits.max_steps == 8 and "tiny-sdxl" in limits.allowed_models
