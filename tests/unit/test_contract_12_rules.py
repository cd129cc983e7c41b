"""Contract 1.2's rules as pure functions and through the validator: init image keys, strength,
LoRA lists, the refusal codes, and versions 1.0 and 1.1 still valid."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic_core import PydanticCustomError

from consumer.client.inputs import input_key, parse_lora
from consumer.generation.engine import plan_job
from schemas import Accepted, ErrorCode, Rejected, RequestLimits, Status, parse_request
from schemas.examples import REQUEST_V1, REQUEST_V1_1
from schemas.inputs import (
    LoraRef,
    check_init_image_key,
    check_loras,
    check_strength_range,
    check_strength_use,
    effective_steps,
)
from schemas.result import GenerationResult

LIMITS = RequestLimits(allowed_loras=("style", "subject", "third"), max_loras_per_request=2)


def code_of(error: PydanticCustomError) -> str:
    return error.type


@pytest.mark.parametrize("key", ["inputs/a.png", "inputs/x/y.webp"])
def test_a_key_under_the_prefix_is_accepted(key: str) -> None:
    check_init_image_key(key, LIMITS)


@pytest.mark.parametrize("key", ["a.png", "input/a.png", "inputs/", "inputs/../images/r/0.png"])
def test_a_key_outside_the_prefix_is_refused(key: str) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        check_init_image_key(key, LIMITS)
    assert code_of(caught.value) == "init_image_not_allowed"


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.01, float("nan")])
def test_strength_out_of_its_range_is_refused(strength: float) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        check_strength_range(strength)
    assert code_of(caught.value) == "strength_out_of_range"


def test_strength_needs_an_init_image() -> None:
    check_strength_use(None, False, 1)  # text-to-image: nothing to check
    with pytest.raises(PydanticCustomError) as caught:
        check_strength_use(0.5, False, 4)
    assert code_of(caught.value) == "strength_without_init_image"


@pytest.mark.parametrize(
    ("strength", "steps", "ok"),
    [(None, 1, False), (None, 2, True), (0.3, 3, False), (0.25, 4, True), (1.0, 1, True)],
)
def test_steps_times_strength_must_reach_one(strength: float | None, steps: int, ok: bool) -> None:
    if ok:
        check_strength_use(strength, True, steps)
        return
    with pytest.raises(PydanticCustomError) as caught:
        check_strength_use(strength, True, steps)
    assert code_of(caught.value) == "too_few_steps_for_strength"


def test_effective_steps_are_what_diffusers_runs() -> None:
    assert effective_steps(4, 0.5) == 2 and effective_steps(3, 0.5) == 1
    assert effective_steps(2, 0.49) == 0


@pytest.mark.parametrize(
    ("loras", "code"),
    [
        ([("style", 1.0), ("subject", 1.0), ("third", 1.0)], "too_many_loras"),
        ([("style", 1.0), ("style", 0.5)], "duplicate_lora"),
        ([("style", 2.5)], "lora_scale_out_of_range"),
        ([("style", -2.01)], "lora_scale_out_of_range"),
        ([("other", 1.0)], "lora_not_allowed"),
    ],
)
def test_lora_lists_break_their_rules(loras: list[tuple[str, float]], code: str) -> None:
    refs = [LoraRef(name=name, scale=scale) for name, scale in loras]
    with pytest.raises(PydanticCustomError) as caught:
        check_loras(refs, LIMITS)
    assert code_of(caught.value) == code


def test_a_valid_lora_list_passes() -> None:
    check_loras([LoraRef(name="style", scale=-2.0), LoraRef(name="subject", scale=2.0)], LIMITS)


def parse(params: dict[str, Any], **top: Any) -> Accepted | Rejected:
    event = {"request_id": "r-12", "prompt": "a cat", "params": params, **top}
    outcome = parse_request(json.dumps(event).encode(), LIMITS)
    assert isinstance(outcome, Accepted | Rejected)
    return outcome


def test_the_sole_refusals_have_their_own_error_codes() -> None:
    outside = parse({"init_image": {"key": "elsewhere/a.png"}, "steps": 2})
    assert isinstance(outside, Rejected)
    assert outside.error.code is ErrorCode.INIT_IMAGE_NOT_ALLOWED
    assert outside.result().status == Status.REJECTED
    lora = parse({"loras": [{"name": "unknown", "scale": 1.0}]})
    assert isinstance(lora, Rejected) and lora.error.code is ErrorCode.LORA_NOT_ALLOWED
    both = parse({"init_image": {"key": "elsewhere/a.png"}, "width": 7})
    assert isinstance(both, Rejected) and both.error.code is ErrorCode.INVALID_REQUEST


def test_refusals_found_when_reading_are_rejected_and_lora_unavailable_failed() -> None:
    for code in (
        ErrorCode.INIT_IMAGE_NOT_FOUND,
        ErrorCode.INIT_IMAGE_UNSUPPORTED_FORMAT,
        ErrorCode.INIT_IMAGE_TOO_LARGE,
        ErrorCode.INIT_IMAGE_UNDECODABLE,
    ):
        assert GenerationResult.failed("r", code).status == Status.REJECTED
    assert GenerationResult.failed("r", ErrorCode.LORA_UNAVAILABLE).status == Status.FAILED


def test_nested_fields_are_strict() -> None:
    empty = parse({"init_image": {"key": ""}, "steps": 2})
    assert isinstance(empty, Rejected)
    assert [v.code.value for v in empty.error.violations] == ["invalid_type"]
    extra = parse({"init_image": {"key": "inputs/a.png", "url": "http://x"}, "steps": 2})
    assert isinstance(extra, Rejected)
    assert [v.code.value for v in extra.error.violations] == ["unknown_field"]


def test_a_12_request_plans_its_inputs() -> None:
    outcome = parse(
        {
            "init_image": {"key": "inputs/a.png"},
            "steps": 4,
            "strength": 0.25,
            "width": 256,
            "loras": [{"name": "style", "scale": 0.5}],
        },
        schema_version="1.2",
    )
    assert isinstance(outcome, Accepted)
    job = plan_job(outcome.request, "neg")
    assert job.init_image == "inputs/a.png" and job.strength == 0.25
    assert (job.width, job.height) == (256, 0)  # the height is the input's, known once read
    assert job.requested_size == (256, 0) and job.input_pending
    assert job.loras == (("style", 0.5),) and job.denoising_steps == 1
    text = plan_job(parse({"width": 256}).request, "neg")  # type: ignore[union-attr]
    assert text.batch_key != job.batch_key and text.denoising_steps == 1
    assert text.batch_key[:5] == ("stabilityai/sdxl-turbo", 256, 512, 1, 0.0)


def test_an_unsized_init_image_costs_as_the_largest_input() -> None:
    cheap = parse({"init_image": {"key": "inputs/a.png"}, "steps": 2, "width": 512, "height": 512})
    dear = parse({"init_image": {"key": "inputs/a.png"}, "steps": 2})
    assert isinstance(cheap, Accepted) and isinstance(dear, Accepted)
    assert dear.request.params.cost > cheap.request.params.cost


@pytest.mark.parametrize("example", [REQUEST_V1, REQUEST_V1_1])
def test_version_1_0_and_1_1_requests_stay_valid(example: dict[str, Any]) -> None:
    limits = RequestLimits()
    assert isinstance(parse_request(json.dumps(example).encode(), limits), Accepted)


def test_the_cli_helpers() -> None:
    assert parse_lora("tiny-lora:0.75") == {"name": "tiny-lora", "scale": 0.75}
    assert parse_lora("org/adapter") == {"name": "org/adapter", "scale": 1.0}
    with pytest.raises(ValueError):
        parse_lora("tiny-lora:much")
    key = input_key("inputs/", b"\x89PNG\r\n\x1a\n rest")
    assert key.startswith("inputs/") and key.endswith(".png") and len(key) == 7 + 64 + 4
    with pytest.raises(ValueError):
        input_key("inputs/", b"GIF89a")


def test_the_contract_page_s_1_2_example_is_what_the_contract_reads() -> None:
    from pathlib import Path

    contract = (Path(__file__).parents[2] / "docs" / "contract.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in contract.split("```json\n")[1:]]
    (example,) = [b for b in blocks if '"schema_version": "1.2"' in b]
    limits = RequestLimits(allowed_loras=("watercolor-style",))
    outcome = parse_request(example.encode(), limits)
    assert isinstance(outcome, Accepted)
    assert outcome.request.params.init_image is not None and outcome.request.params.loras


def test_submit_uploads_its_init_image_and_takes_its_size(tmp_path: Any) -> None:
    from consumer.__main__ import _add_inputs, _request, build_parser
    from consumer.settings import Settings
    from storage import build_store

    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    settings = Settings(_env_file=None, data_dir=tmp_path, storage_backend="local")  # type: ignore[call-arg]
    argv = ["submit", "a cat", "--init-image", str(picture), "--strength", "0.75", "--steps", "2"]
    args = build_parser().parse_args([*argv, "--height", "256", "--lora", "tiny-lora:0.5"])
    request = _request(args, unique=True)
    _add_inputs(settings, args, request)
    params = request["params"]
    assert isinstance(params, dict)
    key = params["init_image"]["key"]
    assert key.startswith("inputs/") and build_store(settings).get(key) == picture.read_bytes()
    assert "width" not in params and params["height"] == 256  # the width is the picture's
    assert params["strength"] == 0.75 and params["loras"] == [{"name": "tiny-lora", "scale": 0.5}]
    plain = build_parser().parse_args(["submit", "a cat"])
    assert _request(plain, unique=True)["params"]["width"] == 512  # type: ignore[index]
