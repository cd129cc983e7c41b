"""Structured JSON logs: one object per line; one line per finished request."""

from __future__ import annotations

import json
import logging
import sys
import time

from consumer.engine import GenerationJob
from schemas import GenerationResult

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "botocore", "urllib3", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def log_result(
    job: GenerationJob, result: GenerationResult, timestamp_ms: int | None, log_prompts: bool
) -> None:
    """The per-request line operators grep for. Prompts only when LOG_PROMPTS is on."""
    fields: dict[str, object] = {
        "request_id": job.request_id,
        "status": result.status.value,
        "model": job.model,
        "size": f"{job.width}x{job.height}",
        "steps": job.steps,
        "cfg": job.cfg,
        "seeds": list(job.seeds),
        "duration_sec": float(result.audit.duration_sec) if result.audit else None,
        "error": result.error.code.value if result.error else None,
    }
    if timestamp_ms:
        fields["latency_sec"] = round(max(0.0, time.time() - timestamp_ms / 1000), 3)
    if log_prompts:
        fields["prompt"] = job.prompt
    logging.getLogger("consumer.requests").info("request finished", extra=fields)
