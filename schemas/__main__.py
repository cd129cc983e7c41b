"""`python -m schemas [OUT_DIR]` writes the JSON Schemas of every event and the AsyncAPI file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.asyncapi import asyncapi_document
from schemas.control import CancelCommand
from schemas.progress import ProgressEvent
from schemas.request import GenerationRequest
from schemas.result import GenerationResult

ASYNCAPI_FILE = "asyncapi.json"
# File stem -> model and mode: what a producer may send is validation, what a worker writes is
# serialization. "v1": the major version; 1.1 and 1.2 only added optional fields.
_MODELS: dict[str, tuple[type[BaseModel], Any]] = {
    "request": (GenerationRequest, "validation"),
    "result": (GenerationResult, "serialization"),
    "progress": (ProgressEvent, "serialization"),
    "control": (CancelCommand, "validation"),
}


def write_schemas(out_dir: Path) -> list[Path]:
    """Write generation-<event>.v1.schema.json for each event, and asyncapi.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, mode) in _MODELS.items():
        path = out_dir / f"generation-{name}.v1.schema.json"
        _write_json(path, model.model_json_schema(mode=mode))
        written.append(path)
    path = out_dir / ASYNCAPI_FILE
    _write_json(path, asyncapi_document())
    written.append(path)
    return written


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in write_schemas(Path(args[0] if args else "schemas/json")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
