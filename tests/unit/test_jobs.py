"""Seed handling and negative-prompt policy, as pure functions."""

from __future__ import annotations

import hashlib

from consumer.generation.engine import CUSTOM_POLICY, STANDARD_POLICY, plan_job
from consumer.generation.engine.jobs import image_seeds, request_seed
from schemas import Accepted, GenerationRequest, RequestLimits, parse_request

LIMITS = RequestLimits(allowed_models=("tiny-sdxl",), default_model="tiny-sdxl")


def request(body: str) -> GenerationRequest:
    outcome = parse_request(body.encode(), LIMITS)
    assert isinstance(outcome, Accepted)
    return outcome.request


def test_given_seed_numbers_images_consecutively() -> None:
    assert image_seeds(10, 3) == (10, 11, 12)


def test_seeds_wrap_below_2_to_the_63() -> None:
    assert image_seeds(2**63 - 1, 2) == (2**63 - 1, 0)


def test_absent_seed_is_derived_from_the_request_id() -> None:
    digest = hashlib.sha256(b"req-8f2c").digest()
    expected = int.from_bytes(digest[:8], "big") >> 1  # the first 63 bits
    # Pinned: changing the rule would change the images of every redelivered seedless request.
    assert request_seed("req-8f2c") == expected == 2734769536802068009
    body = '{"request_id": "req-8f2c", "prompt": "cat", "params": {"num_images": 3}}'
    job = plan_job(request(body), "n")
    assert job.seeds == (expected, expected + 1, expected + 2)
    assert plan_job(request(body), "n").seeds == job.seeds  # a redelivery: the same images


def test_derived_seeds_differ_between_ids_and_stay_in_range() -> None:
    seeds = {request_seed(f"req-{i}") for i in range(256)} | {request_seed("é-ünïcode")}
    assert len(seeds) == 257
    assert all(0 <= seed < 2**63 for seed in seeds)
    assert max(seeds) >= 2**62  # all 63 bits are used, not a shorter slice


def test_plan_job_uses_the_safe_default_negative_prompt() -> None:
    job = plan_job(request('{"request_id": "a", "prompt": "cat"}'), "ugly")
    assert job.negative_prompt == "ugly" and job.policy == STANDARD_POLICY
    assert job.model == "tiny-sdxl" and len(job.seeds) == 1


def test_plan_job_keeps_a_custom_negative_prompt() -> None:
    body = (
        '{"request_id": "a", "prompt": "cat", "negative_prompt": "dogs",'
        ' "params": {"seed": 5, "num_images": 2}}'
    )
    job = plan_job(request(body), "ugly")
    assert job.negative_prompt == "dogs" and job.policy == CUSTOM_POLICY
    assert job.seeds == (5, 6)


def test_batch_key_groups_compatible_requests() -> None:
    a = plan_job(request('{"request_id": "a", "prompt": "x", "params": {"width": 256}}'), "n")
    b = plan_job(request('{"request_id": "b", "prompt": "y", "params": {"width": 256}}'), "n")
    c = plan_job(request('{"request_id": "c", "prompt": "y", "params": {"steps": 2}}'), "n")
    assert a.batch_key == b.batch_key != c.batch_key
