"""Encode time and size of each output format, as the worker encodes them (storage.images).

    python -m benchmarks.formats [--repeat 7] [--sizes 512 1024]

Images: "photo" is a synthetic photograph built with Pillow and numpy, the same pixels on
every run: a sky-to-ground gradient under fractal value noise (clouds), a Mandelbrot texture,
hard-edged discs and squares, a Gaussian blur (lens softness) and seeded Gaussian sensor noise
(sigma 6): smooth areas, edges and grain, as in a diffusion model's output. "noise" is uniform
random RGB, what the tiny test model draws: the worst case for every encoder. Formats: png at
the project's zlib level 1 (PNG_COMPRESS_LEVEL) and, as the baseline, Pillow's PNG encoder at
the same level (what the worker used before), jpeg and webp at quality 90 (the contract's
default) and 75, and lossless webp for comparison (not offered by the contract). A benchmark,
not a test: it prints the median of --repeat runs (milliseconds, one thread) and the size.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from storage.images import encode_image

PARAMETERS: dict[str, object] = {
    "request_id": "bench-1",
    "image_index": 0,
    "prompt": "studio photo of a corgi astronaut on the moon",
    "negative_prompt": "blurry",
    "seed": 1,
    "width": 512,
    "height": 512,
    "steps": 1,
    "cfg": 0.0,
    "model": "stabilityai/sdxl-turbo",
}


def photo(size: int) -> Image.Image:
    """The synthetic photograph described in the module docstring, `size` x `size`."""
    rng = np.random.default_rng(size)
    sky = Image.linear_gradient("L").resize((size, size))
    base = Image.merge("RGB", (sky.point(lambda v: 60 + v // 2), sky, sky.point(lambda v: 255 - v)))
    pixels = np.asarray(base, dtype=np.float32) * 0.5 + _clouds(size, rng) * 0.5
    base = Image.fromarray(pixels.astype(np.uint8), "RGB")
    texture = Image.effect_mandelbrot((size, size), (-0.75, -0.2, -0.65, -0.1), 80)
    base = Image.blend(base, Image.merge("RGB", (texture, texture.rotate(90), texture)), 0.2)
    draw = ImageDraw.Draw(base)
    for i in range(8):  # deterministic shapes: hard edges, as objects have
        x, y, r = (i * 97) % size, (i * 61) % size, size // (10 + i % 5)
        color = ((i * 40) % 256, (i * 90) % 256, (i * 150) % 256)
        shape = draw.ellipse if i % 2 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=color)
    base = base.filter(ImageFilter.GaussianBlur(size / 512))
    pixels = np.asarray(base, dtype=np.float32)
    grain = rng.normal(0.0, 6.0, pixels.shape)  # sensor noise
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8), "RGB")


def _clouds(size: int, rng: np.random.Generator) -> np.ndarray:
    """Fractal value noise (octaves 4 to 256 cells, halving amplitude): natural texture."""
    total = np.zeros((size, size, 3), dtype=np.float32)
    weight = 0.0
    for octave, cells in enumerate((4, 8, 16, 32, 64, 128, 256)):
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        layer = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)
        amplitude = 0.5**octave
        total += np.asarray(layer, dtype=np.float32) * amplitude
        weight += amplitude
    return total / weight


def noise(size: int) -> Image.Image:
    return Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))


def _pillow_png(image: Image.Image) -> bytes:
    """The baseline: Pillow's own PNG encoder at level 1 with zlib's RLE strategy, what the
    worker used before storage/png.py moved to libpng (Pillow filters each row four ways)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE, optimize=False)
    return buffer.getvalue()


def _lossless_webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", lossless=True, quality=50, method=4)
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {
    "png level 1": lambda im: encode_image(im, PARAMETERS, "png", compress_level=1),
    "png pillow l1": _pillow_png,
    "jpeg q90": lambda im: encode_image(im, PARAMETERS, "jpeg", 90),
    "jpeg q75": lambda im: encode_image(im, PARAMETERS, "jpeg", 75),
    "webp q90": lambda im: encode_image(im, PARAMETERS, "webp", 90),
    "webp q75": lambda im: encode_image(im, PARAMETERS, "webp", 75),
    "webp lossless": _lossless_webp,
}


def measure(
    encode: Callable[[Image.Image], bytes], image: Image.Image, repeat: int
) -> tuple[float, int]:
    encode(image)  # warm-up: codec tables, first allocations
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = len(encode(image))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    args = parser.parse_args()
    print(f"{'image':<14}{'format':<16}{'encode ms':>10}{'size KiB':>10}{'vs png':>8}")
    for size in args.sizes:
        for name, make in (("photo", photo), ("noise", noise)):
            image = make(size)
            png_size = 0
            for label, encode in ENCODERS.items():
                ms, encoded = measure(encode, image, args.repeat)
                png_size = png_size or encoded
                row = f"{name} {size}²"
                print(f"{row:<14}{label:<16}{ms:>10.1f}{encoded / 1024:>10.1f}"
                      f"{encoded / png_size:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
