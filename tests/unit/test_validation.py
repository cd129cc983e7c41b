"""The validation matrix: every rule at and around its boundary, with its stable code."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from schemas import (
    Accepted,
    ErrorCode,
    Rejected,
    RequestLimits,
    Undeliverable,
    ViolationCode,
    parse_request,
)

LIMITS = RequestLimits(
    allowed_models=("stabilityai/sdxl-turbo", "tiny-sdxl"),
    default_model="tiny-sdxl",
    max_prompt_length=50,
    max_steps=8,
    max_cfg=10.0,
    max_num_images=4,
)


def event(**params: object) -> bytes:
    return json.dumps({"request_id": "req-1", "prompt": "a corgi", "params": params}).encode()


def violations(raw: bytes) -> list[tuple[str, str]]:
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.request_id == "req-1"
    return [(v.field, v.code.value) for v in outcome.error.violations]


def test_minimal_request_gets_defaults() -> None:
    outcome = parse_request(b'{"request_id": "r.1:x-y_z", "prompt": "  hi  "}', LIMITS)
    assert isinstance(outcome, Accepted)
    request = outcome.request
    assert request.prompt == "hi"
    assert request.negative_prompt is None
    params = request.params
    assert (params.width, params.height, params.steps, params.cfg) == (512, 512, 1, 0.0)
    assert params.model_name == "tiny-sdxl"  # the worker's default, not a hard-coded one
    assert params.num_images == 1 and params.seed is None


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({"width": 64, "height": 2048}, True),
        ({"width": 56}, False),
        ({"width": 2056}, False),
        ({"height": 2048 + 8}, False),
        ({"width": 520}, True),
        ({"steps": 1}, True),
        ({"steps": 8}, True),
        ({"steps": 0}, False),
        ({"steps": 9}, False),
        ({"cfg": 0.0}, True),
        ({"cfg": 10}, True),
        ({"cfg": 10.01}, False),
        ({"cfg": -0.1}, False),
        ({"num_images": 4}, True),
        ({"num_images": 5}, False),
        ({"num_images": 0}, False),
        ({"seed": 0}, True),
        ({"seed": 2**63 - 1}, True),
        ({"seed": 2**63}, False),
        ({"seed": -1}, False),
        ({"model": "stabilityai/sdxl-turbo"}, True),
    ],
)
def test_boundaries(params: dict[str, object], ok: bool) -> None:
    outcome = parse_request(event(**params), LIMITS)
    assert isinstance(outcome, Accepted if ok else Rejected), outcome


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"width": 513}, "params.width", ViolationCode.SIZE_NOT_MULTIPLE_OF_8),
        ({"height": 4096}, "params.height", ViolationCode.SIZE_OUT_OF_RANGE),
        ({"width": 32}, "params.width", ViolationCode.SIZE_OUT_OF_RANGE),
        ({"steps": 9}, "params.steps", ViolationCode.STEPS_OUT_OF_RANGE),
        ({"steps": 0}, "params.steps", ViolationCode.STEPS_OUT_OF_RANGE),
        ({"cfg": 11.0}, "params.cfg", ViolationCode.CFG_OUT_OF_RANGE),
        ({"cfg": -1.0}, "params.cfg", ViolationCode.CFG_OUT_OF_RANGE),
        ({"num_images": 5}, "params.num_images", ViolationCode.NUM_IMAGES_OUT_OF_RANGE),
        ({"seed": -5}, "params.seed", ViolationCode.SEED_OUT_OF_RANGE),
        ({"width": "512"}, "params.width", ViolationCode.INVALID_TYPE),
        ({"width": True}, "params.width", ViolationCode.INVALID_TYPE),
        ({"width": 512.0}, "params.width", ViolationCode.INVALID_TYPE),
        ({"steps": None}, "params.steps", ViolationCode.INVALID_TYPE),
        ({"model": "evil/model"}, "params.model", ViolationCode.MODEL_NOT_ALLOWED),
        ({"sampler": "x"}, "params.sampler", ViolationCode.UNKNOWN_FIELD),
    ],
)
def test_each_violation_has_a_code_and_names_its_field(
    params: dict[str, object], field: str, code: ViolationCode
) -> None:
    assert violations(event(**params)) == [(field, code.value)]
    outcome = parse_request(event(**params), LIMITS)
    assert isinstance(outcome, Rejected)
    assert field in outcome.error.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_cfg_is_refused(literal: bytes) -> None:
    raw = b'{"request_id": "req-1", "prompt": "x", "params": {"cfg": ' + literal + b"}}"
    assert violations(raw) == [("params.cfg", ViolationCode.NOT_FINITE.value)]


def test_prompt_rules() -> None:
    base = {"request_id": "req-1"}
    empty = json.dumps({**base, "prompt": " \n\t "}).encode()
    assert violations(empty) == [("prompt", "prompt_empty")]
    assert violations(json.dumps({**base, "prompt": ""}).encode()) == [("prompt", "prompt_empty")]
    long = json.dumps({**base, "prompt": "x" * 51}).encode()
    assert violations(long) == [("prompt", "prompt_too_long")]
    assert isinstance(
        parse_request(json.dumps({**base, "prompt": "x" * 50}).encode(), LIMITS), Accepted
    )
    assert violations(json.dumps(base).encode()) == [("prompt", "missing_field")]
    assert violations(json.dumps({**base, "prompt": 5}).encode()) == [("prompt", "invalid_type")]


def test_unknown_top_level_field_and_several_violations_at_once() -> None:
    raw = json.dumps(
        {"request_id": "req-1", "prompt": "", "extra": 1, "params": {"width": 7, "steps": 99}}
    ).encode()
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Rejected)
    assert outcome.error.code is ErrorCode.INVALID_REQUEST
    assert {v.field for v in outcome.error.violations} == {
        "prompt",
        "extra",
        "params.width",
        "params.steps",
    }
    result = outcome.result()
    assert result.status == "rejected" and result.request_id == "req-1" and not result.images


def test_model_not_allowed_alone_has_its_own_top_level_code() -> None:
    outcome = parse_request(event(model="other"), LIMITS)
    assert isinstance(outcome, Rejected)
    assert outcome.error.code is ErrorCode.MODEL_NOT_ALLOWED


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", ErrorCode.INVALID_JSON),
        (b"\xff\xfe", ErrorCode.INVALID_JSON),
        (b"{not json", ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.NOT_AN_OBJECT),
        (b'"text"', ErrorCode.NOT_AN_OBJECT),
        (b"null", ErrorCode.NOT_AN_OBJECT),
        (b'{"prompt": "x"}', ErrorCode.INVALID_REQUEST),
        (b'{"request_id": "", "prompt": "x"}', ErrorCode.INVALID_REQUEST),
        (b'{"request_id": "../../etc", "prompt": "x"}', ErrorCode.INVALID_REQUEST),
        (b'{"request_id": 5, "prompt": "x"}', ErrorCode.INVALID_REQUEST),
        (
            ('{"request_id": "' + "a" * 129 + '", "prompt": "x"}').encode(),
            ErrorCode.INVALID_REQUEST,
        ),
    ],
)
def test_events_without_a_usable_request_id_are_undeliverable(raw: bytes, code: ErrorCode) -> None:
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Undeliverable)
    assert outcome.error.code is code


def test_parse_request_accepts_none_value() -> None:
    assert isinstance(parse_request(None, LIMITS), Undeliverable)


def test_hostile_bytes_never_raise() -> None:
    """Random bytes and mangled JSON always give an outcome, never an exception."""
    rng = random.Random(7)
    valid = b'{"request_id": "r1", "prompt": "cat", "params": {"width": 512, "seed": 3}}'
    samples: list[bytes] = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(300)
    ]
    for _ in range(300):
        mangled = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        samples.append(bytes(mangled))
    samples += [b"{" * 10_000, b'{"request_id": "r", "prompt": "' + b"\\u0000" * 1000 + b'"}']
    samples += [b'{"request_id": "r", "prompt": "x", "params": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
    samples += [surrogate_event(rng) for _ in range(300)]
    for raw in samples:
        outcome = parse_request(raw, LIMITS)
        # Whatever the outcome, what the worker publishes from it encodes as UTF-8 JSON.
        if isinstance(outcome, Accepted):
            outcome.request.model_dump_json().encode("utf-8")
        elif isinstance(outcome, Rejected):
            outcome.result().model_dump_json().encode("utf-8")
        else:
            outcome.error.model_dump_json().encode("utf-8")


def surrogate_event(rng: random.Random) -> bytes:
    """A valid event with lone surrogates (\\ud800-\\udfff escapes) in random keys and values."""

    def text() -> str:
        return "".join(
            rng.choice(["a", "\N{SNOWMAN}", chr(rng.randrange(0xD800, 0xE000))])
            for _ in range(rng.randrange(1, 6))
        )

    event: dict[str, Any] = {"request_id": "r1", "prompt": "cat", "params": {"width": 512}}
    for _ in range(rng.randrange(1, 4)):
        where = event if rng.random() < 0.5 else event["params"]
        key = rng.choice(["prompt", "negative_prompt", "model", "width", text()])
        where[key] = rng.choice([text(), {text(): text()}, [text()]])
    return json.dumps(event).encode()  # ensure_ascii: each surrogate becomes a \\uXXXX escape
