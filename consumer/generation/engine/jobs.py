"""What the engine is asked to do: a validated request with its seeds and negative prompt resolved.

Planning is a pure function, so seed handling and policies are tested without any model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas import GenerationRequest
from schemas.cost import request_cost
from schemas.inputs import effective_steps
from schemas.limits import ABSOLUTE_MAX_IMAGE_SIZE, MAX_SEED
from schemas.params import OutputFormat

if TYPE_CHECKING:
    from PIL.Image import Image

STANDARD_POLICY = "standard"  # the worker's safe default negative prompt was applied
CUSTOM_POLICY = "custom"  # the caller supplied its own negative prompt

# LoRA adapters of a job: (name, scale) pairs, in the request's order (contract 1.2).
Loras = tuple[tuple[str, float], ...]
# model, width, height, steps, cfg, strength (None: text-to-image), adapters.
BatchKey = tuple[str, int, int, int, float, float | None, Loras]


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
    # Contract 1.2, image-to-image: the init image's object key (None: text-to-image), the
    # strength, and the size the request asked for (0: the input's, known once it is read;
    # width and height are 0 there until then). Then (inputs.py) the input's SHA-256 and its
    # pixels, resized to width x height.
    init_image: str | None = None
    strength: float | None = None
    requested_size: tuple[int, int] = (0, 0)
    input_sha256: str | None = None
    input_pixels: Image | None = field(default=None, compare=False, repr=False)
    # LoRA adapters, applied at their scales for this job's call, never fused into the weights.
    loras: Loras = ()

    @property
    def batch_key(self) -> BatchKey:
        """Requests with equal keys can share one pipeline call: image-to-image with the same
        strength, the same adapter set at the same scales."""
        return (
            self.model,
            self.width,
            self.height,
            self.steps,
            self.cfg,
            self.strength,
            self.loras,
        )

    @property
    def denoising_steps(self) -> int:
        """The steps the pipeline runs: int(steps x strength) for image-to-image."""
        if self.strength is None:
            return self.steps
        return effective_steps(self.steps, self.strength)

    @property
    def input_pending(self) -> bool:
        """An image-to-image job whose input is not read yet."""
        return self.init_image is not None and self.input_pixels is None

    @property
    def num_images(self) -> int:
        return len(self.seeds)

    @property
    def cost(self) -> float:
        """In default-request units (schemas/cost.py): what the batch budget adds up."""
        width = self.width or ABSOLUTE_MAX_IMAGE_SIZE  # an input's size unknown yet: the largest
        height = self.height or ABSOLUTE_MAX_IMAGE_SIZE
        return request_cost(width, height, self.steps, self.num_images, self.cfg)


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
    width, height = params.requested_size
    return GenerationJob(
        request_id=request.request_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt if custom else default_negative_prompt,  # type: ignore[arg-type]
        policy=CUSTOM_POLICY if custom else STANDARD_POLICY,
        model=params.model_name,
        width=width,
        height=height,
        steps=params.steps,
        cfg=params.cfg,
        seeds=image_seeds(first, params.num_images),
        format=params.format,
        quality=params.output_quality,
        deadline=request.deadline.timestamp() if request.deadline is not None else None,
        model_revision=(model_revisions or {}).get(params.model_name),
        init_image=params.init_image.key if params.init_image is not None else None,
        strength=params.strength_or_default,
        requested_size=(width, height) if params.init_image is not None else (0, 0),
        loras=tuple((lora.name, lora.scale) for lora in params.loras or ()),
    )


def drawn_seed(job: GenerationJob, seed: int) -> int:
    """What the fake and simulated engines draw image `seed` of `job` from: the seed itself, or
    with an init image or adapters (1.2) a mix of it with the input's digest, the strength and
    the adapters, so that those change the pixels as they do on a real model."""
    if job.init_image is None and not job.loras:
        return seed
    text = f"{seed}|{job.input_sha256}|{job.strength}|{list(job.loras)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def warmup_job(model: str, size: int) -> GenerationJob:
    """One image of `model` at `size`² and 1 step: loads the model and wakes its kernels up."""
    return GenerationJob("warmup", "warmup", "", STANDARD_POLICY, model, size, size, 1, 0.0, (0,))
