"""Example messages of the AsyncAPI document (schemas/asyncapi.py). tests/unit/test_asyncapi.py
validates each against its message's payload and header schemas, and the request examples
against the validator itself, so they cannot drift from the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.cloudevents import (
    CONTROL_TYPE,
    DEAD_LETTER_TYPE,
    PROGRESS_TYPE,
    REQUEST_TYPE,
    RESULT_TYPE,
    ce_source,
    cloudevent_headers,
)

_MOMENT = datetime(2026, 5, 1, 12, 0, 1, 250000, tzinfo=UTC)
_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_URL = "http://127.0.0.1:8333/images/req-8f2c/0.webp?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-"


def _headers(
    event_type: str, source: str, subject: str | None, n: int, **options: Any
) -> dict[str, str]:
    pairs = cloudevent_headers(
        event_type,
        ce_source(source),
        subject,
        event_id=f"0b6a1f52-{n:04d}",
        time=_MOMENT,
        **options,
    )
    return {name: value.decode() for name, value in pairs}


def _traced(headers: dict[str, str]) -> dict[str, str]:
    return headers | {"traceparent": _TRACEPARENT}


REQUEST_V1 = {
    "request_id": "req-8f2c",
    "prompt": "studio photo of a corgi astronaut on the moon",
    "negative_prompt": None,
    "params": {
        "width": 512,
        "height": 512,
        "steps": 1,
        "cfg": 0.0,
        "seed": 123456789,
        "num_images": 1,
        "model": "stabilityai/sdxl-turbo",
    },
}
REQUEST_V1_1 = {
    "request_id": "req-8f2c",
    "schema_version": "1.1",
    "prompt": "studio photo of a corgi astronaut on the moon",
    "deadline": "2026-05-01T12:05:00Z",
    "params": {"seed": 123456789, "format": "webp", "quality": 85},
}
REQUEST_V1_2 = {
    "request_id": "req-8f2e",
    "schema_version": "1.2",
    "prompt": "the same product photo as a watercolor",
    "params": {
        "init_image": {"key": "inputs/5d41402abc4b2a76b9719d911017c592.png"},
        "strength": 0.5,
        "steps": 2,
        "seed": 7,
        "loras": [{"name": "watercolor-style", "scale": 0.8}],
    },
}
REQUEST_EXAMPLES: list[dict[str, Any]] = [
    {"name": "v1", "summary": "A version-1 request: still valid.", "payload": REQUEST_V1},
    {
        "name": "v1.1",
        "summary": "With a deadline and WebP output, from a producer that sets CloudEvents.",
        "headers": _traced(_headers(REQUEST_TYPE, "client:shop-api", "req-8f2c", 1)),
        "payload": REQUEST_V1_1,
    },
    {
        "name": "v1.2",
        "summary": "Image-to-image from an uploaded picture, with a LoRA adapter (1.2).",
        "payload": REQUEST_V1_2,
    },
]

_IMAGE = {
    "image_id": "im_5a1d3cc4a099",
    "url": _URL,
    "seed": 123456789,
    "key": "req-8f2c/0.webp",
    "width": 512,
    "height": 512,
    "content_type": "image/webp",
    "bytes": 28731,
}
_AUDIT = {
    "policy": "standard",
    "duration_sec": "0.823",
    "model": "stabilityai/sdxl-turbo",
    "note": None,
}


def _failure(
    status: str, code: str, message: str, violations: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    error = {
        "code": code,
        "message": message,
        "violations": violations or [],
        "omitted_violations": 0,
    }
    return {"request_id": "req-8f2c", "status": status, "images": [], "audit": None, "error": error}


RESULT_EXAMPLES: list[dict[str, Any]] = [
    {
        "name": "completed",
        "headers": _traced(_headers(RESULT_TYPE, "image-workers", "req-8f2c", 2))
        | {"contract-version": "1"},
        "payload": {
            "request_id": "req-8f2c",
            "status": "completed",
            "images": [_IMAGE],
            "audit": _AUDIT,
            "error": None,
        },
    },
    {
        "name": "completed-image-to-image",
        "summary": "1.2: the init image's digest and the adapters applied are in the audit.",
        "payload": {
            "request_id": "req-8f2e",
            "status": "completed",
            "images": [_IMAGE | {"key": "req-8f2e/0.png", "content_type": "image/png"}],
            "audit": _AUDIT
            | {
                "init_image_sha256": (
                    "9f2b5c1d0e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"
                ),
                "loras": [{"name": "watercolor-style", "scale": 0.8}],
            },
            "error": None,
        },
    },
    {
        "name": "init_image_not_found",
        "payload": _failure(
            "rejected",
            "init_image_not_found",
            "the init image does not exist in the worker's store",
        ),
    },
    {
        "name": "expired",
        "payload": _failure(
            "expired",
            "deadline_exceeded",
            "the request's deadline passed before it was completed",
        ),
    },
    {
        "name": "cancelled",
        "payload": _failure("cancelled", "cancelled", "the request was cancelled"),
    },
    {
        "name": "unsupported_version",
        "payload": _failure(
            "rejected",
            "unsupported_version",
            "the request's schema_version is not supported by this worker",
            [
                {
                    "field": "schema_version",
                    "code": "unsupported_version",
                    "message": (
                        "schema_version 2.0 is not supported: this worker reads major version 1"
                    ),
                }
            ],
        ),
    },
]

PROGRESS_EXAMPLES: list[dict[str, Any]] = [
    {
        "name": "step",
        "headers": _traced(_headers(PROGRESS_TYPE, "image-workers", "req-8f2c", 3)),
        "payload": {
            "request_id": "req-8f2c",
            "stage": "step",
            "step": 3,
            "total_steps": 8,
            "ts": "2026-05-01T12:00:01.250Z",
        },
    },
    {
        "name": "queued",
        "payload": {
            "request_id": "req-8f2c",
            "stage": "queued",
            "step": None,
            "total_steps": None,
            "ts": "2026-05-01T12:00:00.100Z",
        },
    },
]

CONTROL_EXAMPLES: list[dict[str, Any]] = [
    {
        "name": "cancel",
        "headers": _headers(CONTROL_TYPE, "client:shop-api", "req-8f2c", 4),
        "payload": {"type": "cancel", "request_id": "req-8f2c"},
    }
]

DEAD_LETTER_EXAMPLES: list[dict[str, Any]] = [
    {
        "name": "invalid_json",
        "headers": {
            "origin": "checkout-service",
            "dlq.source.topic": "generation.requests",
            "dlq.source.partition": "3",
            "dlq.source.offset": "1872",
            "dlq.error.code": "invalid_json",
            "dlq.error.message": "the event is not UTF-8 JSON",
        }
        | _headers(DEAD_LETTER_TYPE, "image-workers", None, 5, content_type=None),
        "payload": '{"request_id": "req-9", "prompt": "unterminated',
    }
]
