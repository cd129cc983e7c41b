"""The README stays a short front page: the two commands for a fresh machine first, the contract
summed up in tables that list every status and every error code, the rest in docs/ (the settings
are checked in tests/unit/test_config_reference.py, the links in tests/unit/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

from schemas import Accepted, ErrorCode, RequestLimits, Status, parse_request

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 200
DEAD_LETTER = "dead letter"


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under `heading`, as cells without their backticks."""
    lines = README.split(f"\n{heading}\n", 1)[1].lstrip("\n").splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))]
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split(" | ")] for line in table]
    return rows[2:]  # below the header and its `|---|` line


def test_the_two_commands_come_first() -> None:
    head = README.split("## ", 1)[0]
    assert "scripts/demo" in head and "scripts/test" in head
    assert "tiny-sdxl" in head and "noise" in head  # what the demo's images are
    assert ROOT.joinpath(".ci", "run").read_text().count("scripts/test") == 1


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= MAX_LINES


def test_every_status_is_in_the_status_table() -> None:
    statuses = [row[0] for row in table_rows("### Statuses")]
    assert statuses == [status.value for status in Status]


def test_every_error_code_is_in_the_error_code_table_with_its_status() -> None:
    rows = {row[0]: row for row in table_rows("### Error codes")}
    missing = [code.value for code in ErrorCode if code.value not in rows]
    assert not missing, f"error codes missing from the README's table: {missing}"
    for code, status, meaning in rows.values():
        assert re.fullmatch(r"[a-z_]+", code) and meaning, code
        assert status in {s.value for s in Status} | {DEAD_LETTER}, code
    # the codes whose status is fixed by the contract
    assert rows["timeout"][1] == Status.TIMEOUT
    assert rows["deadline_exceeded"][1] == Status.EXPIRED
    assert rows["cancelled"][1] == Status.CANCELLED
    assert rows["request_id_conflict"][1] == Status.REJECTED
    assert {rows[c][1] for c in ("invalid_json", "not_an_object", "event_too_large")} == {
        DEAD_LETTER
    }


def test_the_readme_s_request_is_one_the_contract_reads() -> None:
    example = README.split("```json\n", 1)[1].split("```", 1)[0]
    assert isinstance(parse_request(example.encode(), RequestLimits()), Accepted)
