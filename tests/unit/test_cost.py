"""The request budget: what it admits and refuses, and that its violation is typed."""

from __future__ import annotations

import json

import pytest

from schemas import Accepted, Rejected, RequestLimits, parse_request
from schemas.cost import pixel_cost, request_cost

LIMITS = RequestLimits(allowed_models=("m",), default_model="m")


def parse(**params: object) -> Accepted | Rejected:
    raw = json.dumps({"request_id": "r1", "prompt": "p", "params": params}).encode()
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Accepted | Rejected)
    return outcome


def test_the_default_request_costs_one_unit() -> None:
    assert request_cost(512, 512, 1, 1, 0.0) == 1.0
    assert pixel_cost(1024, 1024) > 4  # attention makes pixels cost more than linearly


@pytest.mark.parametrize("steps", range(1, 9))
@pytest.mark.parametrize("size", [64, 512, 1024, 2048])
@pytest.mark.parametrize("cfg", [0.0, 7.5])
def test_every_single_image_turbo_request_fits_the_default_budget(
    steps: int, size: int, cfg: float
) -> None:
    assert isinstance(parse(width=size, height=size, steps=steps, cfg=cfg), Accepted)


def test_the_far_corner_is_refused_with_a_typed_violation() -> None:
    outcome = parse(width=2048, height=2048, steps=50, cfg=7.5, num_images=4)
    assert isinstance(outcome, Rejected)
    (violation,) = outcome.error.violations
    assert violation.code == "too_expensive" and violation.field == "params"
    assert "12047.1" in violation.message and "500" in violation.message


def test_a_budget_of_zero_turns_it_off() -> None:
    raw = json.dumps(
        {"request_id": "r", "prompt": "p", "params": {"width": 2048, "height": 2048, "steps": 50}}
    ).encode()
    unlimited = RequestLimits(allowed_models=("m",), default_model="m", max_request_cost=0)
    assert isinstance(parse_request(raw, unlimited), Accepted)
