"""`tiny-lora`: a LoRA adapter for tiny-sdxl with deterministic random weights, built the way
tiny_model.py builds the model, for tests and demos without a hub.

A peft LoraConfig on the UNet's attention projections (to_q, to_k, to_v, to_out.0), both
matrices drawn after `torch.manual_seed(0)` and scaled up so that the adapter visibly changes
tiny-sdxl's (noise) images, saved in the diffusers LoRA format (pytorch_lora_weights.safetensors,
`unet.`-prefixed keys) so `pipe.load_lora_weights(folder, adapter_name=...)` loads it. Built into
a temporary folder and renamed into place, as the model is.
"""

from __future__ import annotations

from pathlib import Path

from consumer.generation.engine.tiny_model import _create, ensure_tiny_model

TINY_LORA_ID = "tiny-lora"
TINY_LORA_DIRNAME = "tiny-lora"
LORA_WEIGHTS_FILENAME = "pytorch_lora_weights.safetensors"
_RANK = 4
_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
_WEIGHT_SCALE = 4.0  # peft's random init is small: scaled so the adapter shows in the pixels


def _is_complete(folder: Path) -> bool:
    return (folder / LORA_WEIGHTS_FILENAME).is_file()


def ensure_tiny_lora(models_dir: Path) -> Path:
    """Return models_dir / "tiny-lora", building it (and tiny-sdxl) first if needed."""
    target = models_dir / TINY_LORA_DIRNAME
    if not _is_complete(target):
        model = ensure_tiny_model(models_dir)
        _create(target, lambda temp: _save(model, temp))
    return target


def _save(model: Path, folder: Path) -> None:
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(
        model / "unet", use_safetensors=True, local_files_only=True
    )
    torch.manual_seed(0)
    config = LoraConfig(r=_RANK, lora_alpha=_RANK, target_modules=_TARGETS, init_lora_weights=False)
    unet.add_adapter(config)
    state = get_peft_model_state_dict(unet)
    layers = {name: tensor.detach().clone() * _WEIGHT_SCALE for name, tensor in state.items()}
    StableDiffusionXLPipeline.save_lora_weights(
        folder, unet_lora_layers=layers, safe_serialization=True
    )
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
