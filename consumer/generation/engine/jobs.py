"""What the engine is asked to do: a validated request with its seeds and negative prompt resolved.

Planning is a pure function, so seed handling and policies are tested without any model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from schemas import GenerationRequest
from schemas.cost import request_cost
from schemas.limits import MAX_SEED
from schemas.params import OutputFormat

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
    # How the images are stored (contract 1.1): encoding only, so neither is in batch_key.
    format: OutputFormat = "png"
    quality: int | None = None  # None for png; resolved (never None) for jpeg and webp
    # Unix time after which the request is worthless (its `deadline`, or MAX_REQUEST_AGE_SECONDS
    # after its record): it is not started past it, and stops at the next denoising step.
    deadline: float | None = None
    # The hub revision its model is pinned to (MODEL_REVISIONS), None when unpinned: the same
    # for every job of a model on one worker, so not in batch_key, but part of what the images
    # embed and of their digests (images of another revision are other images).
    model_revision: str | None = None
    # Drawn by the simulated engine (ENGINE=simulated): synthetic images, never to be taken for a
    # real model's, so part of what they embed and of their digests.
    synthetic: bool = False

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


def request_seed(request_id: str) -> int:
    """The seed of a request that names none: the first 63 bits of sha256(request_id).

    Derived, not drawn, so that a redelivery (crash, rebalance) reproduces the same images and the
    objects behind already published URLs keep the bytes those results describe."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_seeds(first: int, count: int) -> tuple[int, ...]:
    """Seeds for `count` images: `first`, `first+1`, ... wrapping below 2**63, so image i of a
    request is reproduced alone by asking for its seed."""
    return tuple((first + index) % (MAX_SEED + 1) for index in range(count))


def plan_job(
    request: GenerationRequest,
    default_negative_prompt: str,
    model_revisions: Mapping[str, str] | None = None,
) -> GenerationJob:
    """`model_revisions`: the pinned revisions of hub models (Settings.pinned_revisions())."""
    params = request.params
    first = request_seed(request.request_id) if params.seed is None else params.seed
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
        seeds=image_seeds(first, params.num_images),
        format=params.format,
        quality=params.output_quality,
        deadline=request.deadline.timestamp() if request.deadline is not None else None,
        model_revision=(model_revisions or {}).get(params.model_name),
    )


def warmup_job(model: str, size: int) -> GenerationJob:
    """One image of `model` at `size`² and 1 step: loads the model and wakes its kernels up."""
    return GenerationJob("warmup", "warmup", "", STANDARD_POLICY, model, size, size, 1, 0.0, (0,))
