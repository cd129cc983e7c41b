"""The AsyncAPI 3.0 document of the contract: every topic, its messages' payload schemas (generated
from the pydantic models), Kafka bindings, headers (CloudEvents, trace context, dead letters) and
examples. Written by `python -m consumer schemas`; checked against the official AsyncAPI JSON
Schema (schemas/vendor/) by tests/unit/test_asyncapi.py.

The document describes the worker: it receives requests and control commands and sends results,
progress events and dead letters. Topic names are the defaults; each is a setting.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas import examples
from schemas.cloudevents import (
    MAX_TRACESTATE_BYTES,
    MAX_TRACESTATE_MEMBERS,
    PROGRESS_TYPE,
    RESULT_TYPE,
    SPEC_VERSION,
    TRACEPARENT_BYTES,
)
from schemas.control import CancelCommand
from schemas.progress import ProgressEvent
from schemas.request import CONTRACT_VERSION, REQUEST_ID_PATTERN, GenerationRequest
from schemas.result import GenerationResult

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
_SCHEMAS = "#/components/schemas/"
# Channel id -> (default topic, the setting that changes it).
TOPICS: dict[str, tuple[str, str]] = {
    "requests": ("generation.requests", "REQUEST_TOPIC"),
    "priorityRequests": ("generation.requests.priority", "PRIORITY_TOPIC"),
    "results": ("generation.results", "RESULT_TOPIC"),
    "progress": ("generation.progress", "PROGRESS_TOPIC"),
    "control": ("generation.control", "CONTROL_TOPIC"),
    "deadLetters": ("generation.requests.dlq", "DLQ_TOPIC"),
}
# Channel id -> its one message (the component of the same name).
_CHANNEL_MESSAGES = {
    "requests": "GenerationRequest",
    "priorityRequests": "GenerationRequest",
    "results": "GenerationResult",
    "progress": "ProgressEvent",
    "control": "ControlCommand",
    "deadLetters": "DeadLetter",
}
DESCRIPTION = f"""Image generation over Kafka, contract {CONTRACT_VERSION}.

Versioning: a request may declare `schema_version`; any 1.x is read and another major version
is answered `rejected` with `unsupported_version`. Minor versions only add optional fields, so
every version-1 event stays valid. Each record is keyed by its request_id (dead letters keep the
original key). Results, progress events and dead letters carry CloudEvents 1.0 attributes as
`ce_*` headers (Kafka protocol binding, binary mode) and the request's W3C trace context."""


def asyncapi_document() -> dict[str, Any]:
    """The whole AsyncAPI 3.0.0 document as plain JSON data."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "sdxl-worker generation events",
            "version": CONTRACT_VERSION,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "Any Kafka-API broker; set KAFKA_BOOTSTRAP_SERVERS.",
            }
        },
        "channels": {channel: _channel(channel) for channel in TOPICS},
        "operations": _operations(),
        "components": {
            "schemas": {**payload_schemas(), **_header_schemas()},
            "messages": _messages(),
            "correlationIds": {
                "requestId": {
                    "description": "The request_id, also the record key.",
                    "location": "$message.payload#/request_id",
                }
            },
        },
    }


def payload_schemas() -> dict[str, Any]:
    """The JSON Schemas of every JSON payload, with their shared definitions, keyed by name.

    Requests and commands in validation mode (what a producer may send), results and progress in
    serialization mode (what a worker writes). References point into components/schemas."""
    models: list[tuple[Any, Any]] = [
        (GenerationRequest, "validation"),
        (GenerationResult, "serialization"),
        (ProgressEvent, "serialization"),
        (CancelCommand, "validation"),
    ]
    _, top = models_json_schema(models, ref_template=_SCHEMAS + "{model}")
    schemas: dict[str, Any] = dict(top["$defs"])
    schemas["ControlCommand"] = {
        "description": "A control command; `type` says which. Unknown types are ignored.",
        "oneOf": [{"$ref": _SCHEMAS + "CancelCommand"}],
        "discriminator": "type",
    }
    return schemas


def _channel(channel: str) -> dict[str, Any]:
    topic, setting = TOPICS[channel]
    message = _CHANNEL_MESSAGES[channel]
    return {
        "address": topic,
        "title": f"{channel} ({setting})",
        "description": f"Topic `{topic}` by default; the worker's {setting} setting renames it.",
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _operation(action: str, channel: str, summary: str) -> dict[str, Any]:
    message = _CHANNEL_MESSAGES[channel]
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
    }


def _operations() -> dict[str, Any]:
    group = {"type": "string", "description": "GROUP_ID, shared by every worker of a pool."}
    receive = _operation(
        "receive", "requests", "Validate, generate, store the images, answer, commit."
    )
    urgent = _operation(
        "receive",
        "priorityRequests",
        "The priority lane: the same contract and answers, started before every request of "
        "REQUEST_TOPIC not yet running. Empty PRIORITY_TOPIC: no lane.",
    )
    for operation in (receive, urgent):
        binding = {"groupId": group, "bindingVersion": KAFKA_BINDING_VERSION}
        operation["bindings"] = {"kafka": binding}
        operation["reply"] = {"channel": {"$ref": "#/channels/results"}}
    return {
        "receiveRequests": receive,
        "receivePriorityRequests": urgent,
        "sendResults": _operation("send", "results", "Exactly one answer per request_id."),
        "sendProgress": _operation("send", "progress", "Best effort; for display only."),
        "receiveControl": _operation("receive", "control", "Every worker reads every command."),
        "sendDeadLetters": _operation(
            "send", "deadLetters", "Events without a usable request_id, or too large."
        ),
    }


def _key(description: str, pattern: str | None = REQUEST_ID_PATTERN) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if pattern:
        schema["pattern"] = pattern
    return {"kafka": {"key": schema, "bindingVersion": KAFKA_BINDING_VERSION}}


def _message(name: str, title: str, headers: str, examples: Any, **extra: Any) -> dict[str, Any]:
    """A JSON message keyed by request_id (its correlation id), unless `extra` says otherwise."""
    return {
        "name": name,
        "title": title,
        "contentType": "application/json",
        "payload": {"$ref": _SCHEMAS + name},
        "headers": {"$ref": _SCHEMAS + headers},
        "correlationId": {"$ref": "#/components/correlationIds/requestId"},
        "bindings": _key("The request_id."),
        "examples": examples,
        **extra,
    }


def _messages() -> dict[str, Any]:
    control = _message(
        "ControlCommand",
        "Control command (1.1)",
        "RequestHeaders",
        examples.CONTROL_EXAMPLES,
        bindings=_key("The request_id the command targets."),
    )
    del control["correlationId"]
    return {
        "GenerationRequest": _message(
            "GenerationRequest", "Generation request", "RequestHeaders", examples.REQUEST_EXAMPLES
        ),
        "GenerationResult": _message(
            "GenerationResult", "Generation result", "ResultHeaders", examples.RESULT_EXAMPLES
        ),
        "ProgressEvent": _message(
            "ProgressEvent", "Progress event (1.1)", "ProgressHeaders", examples.PROGRESS_EXAMPLES
        ),
        "ControlCommand": control,
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Dead letter",
            "summary": "The original record, byte for byte (maybe truncated), with dlq.* headers.",
            "contentType": "application/octet-stream",
            "payload": {"$ref": _SCHEMAS + "DeadLetterPayload"},
            "headers": {"$ref": _SCHEMAS + "DeadLetterHeaders"},
            "bindings": _key("The original record's key (its first 1024 bytes).", None),
            "examples": examples.DEAD_LETTER_EXAMPLES,
        },
    }


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _cloudevents(event_type: str | None, json_content: bool = True) -> dict[str, Any]:
    """The ce_* headers; `event_type` pins ce_type (None: a producer's own, any type)."""
    ce_type = _string("The event type.") | ({"const": event_type} if event_type else {})
    content = {"const": "application/json"} if json_content else {}
    return {
        "ce_specversion": _string("CloudEvents version.", const=SPEC_VERSION),
        "ce_id": _string("Unique per event.", minLength=1),
        "ce_source": _string("Who sent it: urn:sdxl-worker:<name>.", format="uri-reference"),
        "ce_type": ce_type,
        "ce_time": _string("When it was produced (RFC 3339, UTC).", format="date-time"),
        "ce_subject": _string("The request_id."),
        "content-type": _string("datacontenttype.", **content),
    }


_TRACE_IN = {
    "traceparent": _string(
        "W3C trace context of the request, carried onto what it causes.",
        pattern="^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$",
    ),
    "tracestate": _string(
        "W3C tracestate, with a valid traceparent only (carried cut to 512 bytes)."
    ),
}
# What the worker carries: rebuilt from the request's fields, never copied (a later version's
# extra fields are dropped), and a tracestate of at most 32 members cut to 512 bytes.
_TRACE_OUT = {
    "traceparent": _string(
        "The request's W3C trace context, as version 00.",
        pattern="^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        maxLength=TRACEPARENT_BYTES,
    ),
    "tracestate": _string(
        f"The request's W3C tracestate: at most {MAX_TRACESTATE_MEMBERS} members.",
        maxLength=MAX_TRACESTATE_BYTES,
    ),
}


def _headers(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _header_schemas() -> dict[str, Any]:
    return {
        "RequestHeaders": _headers(
            "All optional: CloudEvents attributes are accepted, not required.",
            {**_cloudevents(None), **_TRACE_IN},
        ),
        "ResultHeaders": _headers(
            "CloudEvents attributes (ce_type generation.result.v1) and the trace context.",
            {
                **_cloudevents(RESULT_TYPE),
                **_TRACE_OUT,
                "contract-version": _string("Major version of the contract.", const="1"),
            },
        ),
        "ProgressHeaders": _headers(
            "CloudEvents attributes (ce_type generation.progress.v1) and the trace context.",
            {**_cloudevents(PROGRESS_TYPE), **_TRACE_OUT},
        ),
        "DeadLetterHeaders": _headers(
            "The original record's headers (up to 16 KiB), then these.",
            {
                "dlq.source.topic": _string("Where the record was read."),
                "dlq.source.partition": _string("Its partition, in decimal.", pattern="^[0-9]+$"),
                "dlq.source.offset": _string("Its offset, in decimal.", pattern="^[0-9]+$"),
                "dlq.error.code": {"$ref": _SCHEMAS + "ErrorCode"},
                "dlq.error.message": _string("The code's fixed public text.", maxLength=1000),
                "dlq.truncated": _string(
                    "What was cut to fit KAFKA_MAX_REQUEST_SIZE, with original sizes: "
                    "key:<n>, value:<n>, headers:<dropped>, comma-separated."
                ),
                # The original's own ce_* headers, if it had any, come first, with its ce_type;
                # a dead letter's content-type, if any, is the original's.
                **_cloudevents(None, json_content=False),
            },
            required=[
                "dlq.source.topic",
                "dlq.source.partition",
                "dlq.source.offset",
                "dlq.error.code",
                "dlq.error.message",
            ],
        ),
        "DeadLetterPayload": _string(
            "The original record value, unparsed: any bytes (here as text), maybe truncated."
        ),
    }
