"""What a request costs the engine, in units of the default request (one 512x512 image, one
step, no classifier-free guidance), so a budget can refuse the few requests that would hold a
GPU for minutes or exhaust its memory.

    cost = images x steps x guidance x p x (1 + p / 16) / (1 + 1 / 16),   p = pixels / 512²

- images and steps multiply the UNet work;
- guidance: with cfg > 1 the pipeline runs the UNet on a doubled batch (diffusers'
  `do_classifier_free_guidance`), so it costs twice;
- pixels: convolutions grow with the pixel count, self-attention with its square; SDXL's wide
  channels keep convolutions dominant at the usual sizes, so the quadratic term is mild: 1024²
  costs 4.7 units per step, 2048² 30 (the tiny test model, all attention and no width, grew 7.8x
  per 4x pixels from 512² to 1024² on this machine's CPU: the real model grows less).

The default budget (MAX_REQUEST_COST=500) admits every single-image request the size limits allow
at sdxl-turbo's usual 1-8 steps, with guidance (2048², 8 steps, cfg > 1: 482), and refuses the
far corners (four 2048² images at 50 steps with guidance: 12,047).
"""

from __future__ import annotations

REFERENCE_PIXELS = 512 * 512
_ATTENTION_SCALE = 16.0  # p at which the quadratic term equals the linear one (2048²)


def pixel_cost(width: int, height: int) -> float:
    p = width * height / REFERENCE_PIXELS
    return p * (1 + p / _ATTENTION_SCALE) / (1 + 1 / _ATTENTION_SCALE)


def request_cost(width: int, height: int, steps: int, num_images: int, cfg: float) -> float:
    guidance = 2 if cfg > 1 else 1
    return round(num_images * steps * guidance * pixel_cost(width, height), 2)
