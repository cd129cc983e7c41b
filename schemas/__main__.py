"""`python -m schemas [OUT_DIR]` writes the JSON Schemas of the request and result events."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.request import GenerationRequest
from schemas.result import GenerationResult


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in (("request", GenerationRequest), ("result", GenerationResult)):
        path = out_dir / f"generation-{name}.v1.schema.json"
        schema = model.model_json_schema(
            mode="validation" if name == "request" else "serialization"
        )
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in write_schemas(Path(args[0] if args else "schemas/json")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
