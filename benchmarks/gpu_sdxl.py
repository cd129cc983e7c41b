"""Full-size SDXL on a GPU, with random weights: raw pipeline vs the worker's engine.

Builds an SDXL-architecture pipeline (UNet 2.6 B parameters, both text encoders, the VAE) from
configs, in fp16, directly on the GPU; nothing is downloaded. Reports p50/p95 latency and
images/s at 512x512, 1 step, cfg 0 for batch 1, 4 and 8: the pipeline called in a tight loop
("raw") and the same pipeline behind DiffusersEngine.generate ("engine"), with the stock VAE
upcast to fp32 and with an fp16 VAE. Random weights draw noise; the timing is the real model's.

    python -m benchmarks.gpu_sdxl [--tiny] [--compile] [--iters 20] [--json out.json]

`--tiny` builds the tiny test model instead, so the script itself can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SDXL_UNET = {
    "sample_size": 128,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_VAE = {
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


def build_sdxl(tokenizer_dir: Path, device: str, dtype: torch.dtype) -> Any:
    """The SDXL architecture with random weights, built where it will run."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer_dir / "tokenizer_2")
    ids = {
        "vocab_size": max(len(tokenizer), 1000),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "max_position_embeddings": 77,
    }
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # allocate in fp16 at once: no fp32 copy on the GPU
        try:
            text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L, **ids))
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G, **ids))
            unet = UNet2DConditionModel(**SDXL_UNET)
            vae = AutoencoderKL(**SDXL_VAE)
        finally:
            torch.set_default_dtype(previous)
    scheduler = EulerAncestralDiscreteScheduler(timestep_spacing="trailing")
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def timed(call: Callable[[], object], iters: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(3):  # warm-up: kernel selection, allocator, compile
        call()
    sync()
    seconds = []
    for _ in range(iters):
        started = time.perf_counter()
        call()
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(label: str, batch: int, seconds: list[float]) -> dict[str, Any]:
    p50 = statistics.median(seconds)
    p95 = sorted(seconds)[max(0, round(0.95 * len(seconds)) - 1)]
    row = {
        "variant": label,
        "batch": batch,
        "p50_ms": p50 * 1000,
        "p95_ms": p95 * 1000,
        "images_per_s": batch / p50,
    }
    print(
        f"{label:<22} batch {batch}: p50 {row['p50_ms']:8.1f} ms  p95 {row['p95_ms']:8.1f} ms"
        f"  {row['images_per_s']:7.1f} images/s",
        flush=True,
    )
    return row


def raw_call(pipeline: Any, batch: int, size: int) -> Callable[[], object]:
    def call() -> object:
        generators = [torch.Generator("cpu").manual_seed(s) for s in range(batch)]
        with torch.inference_mode():
            return pipeline(
                prompt=["a photo of a corgi"] * batch,
                width=size,
                height=size,
                num_inference_steps=1,
                guidance_scale=0.0,
                generator=generators,
                output_type="pil",
            )

    return call


def engine_call(engine: Any, batch: int, size: int) -> Callable[[], object]:
    from consumer.generation.engine import GenerationJob

    jobs = [
        GenerationJob(
            f"r{i}", "a photo of a corgi", "blurry", "standard", "bench", size, size, 1, 0.0, (i,)
        )
        for i in range(batch)
    ]
    return lambda: engine.generate(jobs, 0)


def engine_around(pipeline: Any, data_dir: Path) -> Any:
    """The worker's DiffusersEngine, its cache handing out the prebuilt pipeline."""
    from consumer.generation.engine.cache import ModelCache
    from consumer.generation.engine.diffusers_engine import DiffusersEngine
    from consumer.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir, default_model="bench")
    engine = DiffusersEngine(settings.engine_config())
    engine._cache = ModelCache(lambda _: pipeline, 1)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="tiny model, for a CPU check")
    parser.add_argument("--compile", action="store_true", help="also time a compiled UNet")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from consumer.generation.engine.tiny_model import ensure_tiny_model

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    data_dir = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    tiny = ensure_tiny_model(data_dir / "models")
    started = time.perf_counter()
    if args.tiny:
        from diffusers import AutoPipelineForText2Image

        pipeline = AutoPipelineForText2Image.from_pretrained(tiny, dtype=dtype).to(device)
        pipeline.set_progress_bar_config(disable=True)
    else:
        pipeline = build_sdxl(tiny, device, dtype)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"device {name}, torch {torch.__version__}, built in {time.perf_counter() - started:.1f} s"
    )
    if cuda:
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    rows = []
    engine = engine_around(pipeline, data_dir)
    for upcast in (True, False):  # stock VAE (decoded in fp32) vs an fp16 VAE path
        pipeline.vae.config.force_upcast = upcast
        vae = "vae-fp32" if upcast else "vae-fp16"
        for batch in (1, 4, 8):
            rows.append(
                summary(
                    f"raw {vae}",
                    batch,
                    timed(raw_call(pipeline, batch, args.size), args.iters, sync),
                )
            )
            rows.append(
                summary(
                    f"engine {vae}",
                    batch,
                    timed(engine_call(engine, batch, args.size), args.iters, sync),
                )
            )
    if args.compile and cuda:
        pipeline.unet = torch.compile(pipeline.unet, mode="max-autotune", fullgraph=True)
        for batch in (1, 8):
            rows.append(
                summary(
                    "raw vae-fp16 compiled",
                    batch,
                    timed(raw_call(pipeline, batch, args.size), args.iters, sync),
                )
            )
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
