"""A tiny SDXL-architecture text-to-image model with deterministic random weights.

It has the exact layout of a real SDXL folder (two CLIP text encoders, UNet with text_time
conditioning, 4-block VAE, Euler-ancestral scheduler), so it loads through
`AutoPipelineForText2Image.from_pretrained` like sdxl-turbo, but it is ~1 MB, needs no network and
runs in a fraction of a second on a CPU. Its weights are random: it draws noise. It exists for tests
and demos only, and every place that shows its output must say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

TINY_MODEL_DIRNAME = "tiny-sdxl"
MARKER_FILENAME = "README.md"
MARKER_TEXT = "tiny-sdxl: random weights, it draws noise; for tests and demos only\n"

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_MAX_LENGTH = 77  # CLIP's context; without it the tokenizer pads to ~1e30 and overflows
_TEMP_PREFIX = f".{TINY_MODEL_DIRNAME}-build-"
_STALE_TEMP_SECONDS = 600.0  # a build takes seconds; older temp folders are from killed builds
# CLIP's pre-tokeniser split (words, single digits, punctuation runs, common contractions).
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Fixed corpus for the BPE merges: the vocabulary only has to be stable, not good.
_TRAINING_PROMPTS = (
    "a photo of a cat sitting on a window sill",
    "an astronaut riding a horse on the moon, digital art",
    "a red apple on a wooden table, studio lighting",
    "a watercolor painting of a mountain lake at sunrise",
    "portrait of an old man with a beard, oil on canvas",
    "a futuristic city skyline at night with neon lights",
    "a bowl of ramen, close-up, highly detailed, 4k",
)


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode table, in CLIP's vocab order (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _learn_merges() -> list[tuple[str, str]]:
    """Learn BPE merges on the fixed prompts with CLIP's normaliser and pre-tokeniser."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tokenizer = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        # Registering every "x</w>" up front, in a fixed order, fixes their ids; otherwise the
        # trainer numbers them in hash-map order and breaks count ties differently on every run.
        special_tokens=[symbol + "</w>" for symbol in _byte_symbols()],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TRAINING_PROMPTS, trainer=trainer)
    return _merge_pairs(tokenizer.to_str())


def _merge_pairs(tokenizer_json: str) -> list[tuple[str, str]]:
    """Merges from a serialised tokenizer: pairs since tokenizers 0.20, "a b" strings before."""
    merges = json.loads(tokenizer_json)["model"]["merges"]
    pairs = [entry.split(" ", 1) if isinstance(entry, str) else entry for entry in merges]
    return [(str(left), str(right)) for left, right in pairs]


def _clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's layout: bytes, bytes + `</w>`, one entry per merge, then the two special tokens."""
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), _BOS, _EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))  # two merges may yield one token; ids stay dense
    return vocab


def _build_tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    merges = _learn_merges()
    return CLIPTokenizer(vocab=_clip_vocab(merges), merges=merges, model_max_length=_MAX_LENGTH)


def _build_text_encoders(tokenizer: CLIPTokenizer) -> tuple[Any, Any]:
    """CLIP-L-like and CLIP-G-like encoders; hidden 32 + 32 = the UNet's cross_attention_dim."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        projection_dim=32,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=_MAX_LENGTH,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        # Real ids: CLIP pools at the first eos_token_id (it only uses argmax when eos is 2).
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(config)
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(config)
    return text_encoder.eval(), text_encoder_2.eval()


def _build_unet() -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,  # default output 64 * 8 = 512 px, as sdxl-turbo
        in_channels=4,
        out_channels=4,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),  # diffusers' legacy name: this is the number of heads
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        norm_num_groups=1,
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
        addition_embed_type="text_time",  # SDXL's pooled-text + size/crop conditioning
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids + pooled projection
    )
    return unet.eval()


def _build_vae() -> Any:
    """Four blocks, so the latent is 1/8 of the image as in real SDXL (vae_scale_factor 8)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(4, 4, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=512,
        scaling_factor=0.13025,  # SDXL's
    )
    return vae.eval()


def _build_scheduler() -> Any:
    """sdxl-turbo's scheduler settings; "trailing" spacing makes 1-step sampling sensible."""
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="trailing",
    )


def build_tiny_pipeline() -> StableDiffusionXLPipeline:
    """Build the tiny pipeline in memory; the same weights on every call (seeded per model)."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    with torch.random.fork_rng(devices=[]):  # the per-model seeding must not reset the caller's RNG
        tokenizer = _build_tokenizer()
        text_encoder, text_encoder_2 = _build_text_encoders(tokenizer)
        return StableDiffusionXLPipeline(
            vae=_build_vae(),
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=_build_unet(),
            scheduler=_build_scheduler(),
            force_zeros_for_empty_prompt=True,  # as sdxl-turbo: empty negative prompt -> zeros
            add_watermarker=False,  # not saved in the folder; loading decides it again
        )


def _write_tokenizer_files(tokenizer: CLIPTokenizer, folder: Path) -> None:
    """transformers 5 saves only tokenizer.json; add vocab.json + merges.txt for other loaders."""
    serialised = tokenizer.backend_tokenizer.to_str()
    vocab = dict(sorted(json.loads(serialised)["model"]["vocab"].items(), key=lambda kv: kv[1]))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in _merge_pairs(serialised))]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _save(pipeline: StableDiffusionXLPipeline, folder: Path) -> None:
    pipeline.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        _write_tokenizer_files(getattr(pipeline, name), folder / name)
    (folder / MARKER_FILENAME).write_text(MARKER_TEXT, encoding="utf-8")
    _make_world_readable(folder)


def _make_world_readable(folder: Path) -> None:
    """mkdtemp makes the folder 0700 and safetensors writes 0600; make them like a download."""
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _remove_stale_temp_folders(models_dir: Path) -> None:
    """Clear what builds killed mid-way left; young ones may belong to a live concurrent build."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for leftover in models_dir.glob(_TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):  # another process may be removing it right now
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover)


def _is_complete(folder: Path) -> bool:
    # The marker is written last, and the folder only appears by rename, so it means "complete".
    return (folder / "model_index.json").is_file() and (folder / MARKER_FILENAME).is_file()


def ensure_tiny_model(models_dir: Path) -> Path:
    """Return models_dir / "tiny-sdxl", building it first if it is not there yet."""
    target = models_dir / TINY_MODEL_DIRNAME
    if not _is_complete(target):
        _create(target, lambda temp: _save(build_tiny_pipeline(), temp))
    return target


def ensure_tiny_model_copy(models_dir: Path, name: str = f"{TINY_MODEL_DIRNAME}-copy") -> Path:
    """A second local model, for tests that need two: the tiny model's folder copied to
    models_dir / name (same weights). Its absolute path, returned, is its model id (a local
    folder), which the engine loads as any local model."""
    if name == TINY_MODEL_DIRNAME:
        raise ValueError("the copy needs a name of its own")
    target = models_dir / name
    if not _is_complete(target):
        source = ensure_tiny_model(models_dir)
        _create(target, lambda temp: _copy(source, temp))
    return target.resolve()


def _copy(source: Path, temp: Path) -> None:
    shutil.copytree(source, temp, dirs_exist_ok=True)
    _make_world_readable(temp)


def _create(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder beside `target` (same filesystem), then rename it: the target
    appears complete or not at all, however many processes race for it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_folders(target.parent)
    temp = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=target.parent))
    try:
        fill(temp)
        os.rename(temp, target)
    except OSError:
        if not _is_complete(target):
            raise
        # Another process won the race: its folder is identical, keep it and drop ours.
    finally:
        shutil.rmtree(temp, ignore_errors=True)
