"""The README documents every setting and names the two commands for a fresh machine."""

from __future__ import annotations

from pathlib import Path

from consumer.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.append(str(choices[0]) if choices else name.upper())
    return names


def test_every_setting_is_documented() -> None:
    missing = [name for name in env_names() if f"`{name}`" not in README]
    assert not missing, f"undocumented settings: {missing}"


def test_the_two_commands_come_first() -> None:
    head = README.split("## ", 1)[0]
    assert "scripts/demo" in head and "scripts/test" in head
    assert Path(__file__).parents[2].joinpath(".ci", "run").read_text().count("scripts/test") == 1
