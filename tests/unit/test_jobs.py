"""Seed handling and negative-prompt policy, as pure functions."""

from __future__ import annotations

import itertools

from consumer.engine import CUSTOM_POLICY, STANDARD_POLICY, plan_job
from consumer.engine.jobs import image_seeds
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


def test_absent_seed_draws_one_per_image() -> None:
    counter = itertools.count(100)
    assert image_seeds(None, 3, lambda: next(counter)) == (100, 101, 102)
    drawn = image_seeds(None, 64)
    assert all(0 <= s < 2**63 for s in drawn)
    assert len(set(drawn)) == 64


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
