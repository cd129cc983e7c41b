"""Control commands (contract 1.1) on `generation.control`, keyed by the request_id they target.

A command is a JSON object discriminated by `type`; "cancel" is the only one so far. Readers
skip what they cannot use (garbage, an unknown type), so new commands can be added without
breaking older workers.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.request import RequestId

# Commands are a few dozen bytes; anything much larger is not one and is not parsed.
MAX_CONTROL_BYTES = 64 * 1024


class CancelCommand(BaseModel):
    """Cancel one request: a worker that has not answered it yet answers it `cancelled`
    (error code `cancelled`) instead of generating, or stops at the next denoising step."""

    # Fields a newer producer adds do not stop an older worker from cancelling.
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    type: Literal["cancel"] = "cancel"
    request_id: RequestId


# The union of every command, discriminated by `type`. One member so far; add new ones to both.
ControlCommand = CancelCommand
COMMAND_TYPES: dict[str, type[ControlCommand]] = {"cancel": CancelCommand}


def parse_control(raw: bytes | None) -> ControlCommand | None:
    """The command in a control record's value, or None for anything else. Never raises."""
    if not raw or len(raw) > MAX_CONTROL_BYTES:
        return None
    try:
        payload: Any = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(payload, dict):
        return None
    command_type = payload.get("type")
    model = COMMAND_TYPES.get(command_type) if isinstance(command_type, str) else None
    if model is None:
        return None
    try:
        return model.model_validate(payload)
    except ValidationError:
        return None


def control_value(command: ControlCommand) -> bytes:
    """The record value for `command` (its key is command.request_id)."""
    return command.model_dump_json().encode()
