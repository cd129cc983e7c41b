"""What the engine is asked to do: a validated request with its seeds and negative prompt resolved.

Planning is a pure function, so seed handling and policies are tested without any model.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from schemas import GenerationRequest
from schemas.cost import request_cost
from schemas.limits import MAX_SEED

STANDARD_POLICY = "standard"  # the worker's safe default negative prompt was applied
CUSTOM_POLICY = "custom"  # the caller supplied its own negative prompt

BatchKey = tuple[str, int, int, int, float]


@dataclass(frozen=True)
class GenerationJob:
    request_id: str
    prompt: str
    negative_prompt: str
    policy: str
    model: str
    width: int
    height: int
    steps: int
    cfg: float
    seeds: tuple[int, ...]

    @property
    def batch_key(self) -> BatchKey:
        """Requests with equal keys can share one pipeline call."""
        return (self.model, self.width, self.height, self.steps, self.cfg)

    @property
    def num_images(self) -> int:
        return len(self.seeds)

    @property
    def cost(self) -> float:
        """In default-request units (schemas/cost.py): what the batch budget adds up."""
        return request_cost(self.width, self.height, self.steps, self.num_images, self.cfg)


def random_seed() -> int:
    return secrets.randbits(63)


def image_seeds(
    first: int | None, count: int, draw: Callable[[], int] = random_seed
) -> tuple[int, ...]:
    """Seeds for `count` images: `first`, `first+1`, ... (wrapping below 2**63) when a seed is
    given, so image i of a request is reproduced alone by asking for its seed; otherwise a fresh
    63-bit seed per image."""
    if first is None:
        return tuple(draw() for _ in range(count))
    return tuple((first + index) % (MAX_SEED + 1) for index in range(count))


def plan_job(
    request: GenerationRequest,
    default_negative_prompt: str,
    draw: Callable[[], int] = random_seed,
) -> GenerationJob:
    params = request.params
    custom = request.negative_prompt is not None
    return GenerationJob(
        request_id=request.request_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt if custom else default_negative_prompt,  # type: ignore[arg-type]
        policy=CUSTOM_POLICY if custom else STANDARD_POLICY,
        model=params.model_name,
        width=params.width,
        height=params.height,
        steps=params.steps,
        cfg=params.cfg,
        seeds=image_seeds(params.seed, params.num_images, draw),
    )
