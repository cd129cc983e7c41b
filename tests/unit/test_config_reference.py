"""docs/configuration.md is generated from the settings (consumer/devtools/config_reference.py):
every setting has a description, the page is what the generator writes today, and no secret's
value ever reaches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from consumer.devtools.config_reference import env_name, render, sections
from consumer.settings import Settings

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m consumer.devtools.config_reference > docs/configuration.md"


def rows_by_name(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not missing, f"settings without a description: {missing}"


def test_the_page_is_what_the_settings_say() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md drifted: {REGENERATE}"
    )


def test_every_setting_has_one_row_under_one_section() -> None:
    grouped = [name for _, names in sections() for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields)
    rows = rows_by_name(render())
    expected = {env_name(name, field) for name, field in Settings.model_fields.items()}
    assert set(rows) == expected
    assert rows["HF_HUB_OFFLINE"] and rows["AWS_ACCESS_KEY_ID"]  # by their alias
    assert [title for title, _ in sections()][:2] == ["Sidecar, models and health", "Engine"]


def test_secrets_show_no_value() -> None:
    rows = rows_by_name(render())
    for name in ("API_KEY", "API_KEYS", "KAFKA_SASL_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert rows[name][2] == "—", name
    assert rows["APP_PORT"][1:3] == ["int, ≥ 0, ≤ 65535", "`8001`"]
    assert rows["KAFKA_MAX_REQUEST_SIZE"][2] == "`1048576` (1 MiB)"


def test_the_environment_does_not_leak_into_the_page() -> None:
    """The page shows the declared defaults, not what the machine that renders it has set."""
    code = "from consumer.devtools.config_reference import render; print(render(), end='')"
    env = {"API_KEY": "sekrit-value", "APP_PORT": "9999", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == render() and "sekrit" not in done.stdout


def test_markup_in_descriptions_survives() -> None:
    rows = rows_by_name(render())
    # `<key>` would be an HTML tag to GitHub; setting names become code
    assert "&lt;request_id&gt;" in rows["S3_KEY_PREFIX"][3]
    assert "`MAX_MODELS_CACHE`" in rows["MODEL_CACHE_MAX_BYTES"][3]
