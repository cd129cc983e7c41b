"""Loading a pipeline from a model id: the built-in tiny model, a local folder or a hub id.

Loading is offline-aware. A hub id is first looked up in the local cache only; the hub is asked
only when it is allowed (HF_HUB_OFFLINE unset) and reachable, so an unreachable hub costs one
short probe instead of ~20 s of download retries, and the error says what to do. A hub id pinned
in MODEL_REVISIONS loads that revision, from the cache or the hub, and nothing else.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from consumer.generation.engine.catalog import TINY_MODEL_ID, model_kind
from consumer.generation.engine.config import AttentionSlicing, CpuOffload, cpu_offload_refusal
from consumer.generation.engine.failures import unavailable
from consumer.generation.engine.memory import guard_load
from consumer.generation.engine.protocol import EngineError
from consumer.generation.engine.tiny_model import ensure_tiny_model
from consumer.ops.logs import route_library_logs
from schemas import ErrorCode

log = logging.getLogger(__name__)

# from_pretrained is not thread-safe: accelerate's init_empty_weights patches torch.nn.Module
# process-wide while a model is built, and two interleaved loads can leave that patch in place
# for good (every later load then fails with "Cannot copy out of meta tensor"). One load at a
# time per process, whichever engine or cache asks.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype


def choose_placement(requested: str) -> Placement:
    """fp16 on CUDA, fp32 elsewhere (fp16 on CPU is slow and poorly supported)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return Placement("cuda", torch.float16)
    return Placement(requested, torch.float32)


@dataclass(frozen=True)
class Tuning:
    """Speed-ups, applied on CUDA only (they cost or break things on CPU), and memory savers
    for small GPUs (docs/operations.md, "Small GPUs"), applied on any device, except offload,
    which needs an accelerator."""

    torch_compile: bool = False  # compile the UNet: slow first call, faster afterwards
    fp16_vae: str | None = None  # an fp16-safe VAE (id or folder), e.g. sdxl-vae-fp16-fix
    # model: each sub-model (text encoders, UNet, VAE) moved to the accelerator when it runs;
    # sequential: each layer, weights streamed from the CPU on every call (slowest, least memory).
    cpu_offload: CpuOffload = "none"
    vae_slicing: bool = False  # decode a batch's latents one image at a time
    vae_tiling: bool = False  # decode (and encode) large images in overlapping tiles
    attention_slicing: AttentionSlicing = None  # None: torch's SDPA kernels, unsliced


class PipelineLoader:
    def __init__(
        self,
        models_dir: Path,
        placement: Placement,
        offline: bool,
        probe_timeout: float,
        tuning: Tuning | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> None:
        """`revisions`: hub model id -> the revision to load (MODEL_REVISIONS); a local folder
        or the tiny model has none."""
        self._models_dir = models_dir
        self._placement = placement
        self._offline = offline
        self._probe_timeout = probe_timeout
        self._tuning = tuning or Tuning()
        self._revisions = dict(revisions or {})
        if self._tuning.cpu_offload != "none" and placement.device == "cpu":
            # Refused here, when the engine is built (the worker fails at start), rather than
            # by every load: DEVICE=auto on a host without an accelerator resolves to the CPU.
            raise EngineError(
                ErrorCode.INTERNAL_ERROR, cpu_offload_refusal(self._tuning.cpu_offload, "cpu")
            )

    def __call__(self, model_id: str) -> Any:
        with _LOAD_LOCK:
            # Out of memory (host or device) while building or moving the pipeline: the half
            # loaded pipeline is freed before the error goes up. Whatever else a load raises
            # (weights that do not fit the config, a pipeline class diffusers lacks) the model
            # cache turns into model_unavailable (failures.py), remembered like the others.
            return guard_load(lambda: self._load(model_id), self._placement.device, model_id)

    def check(self, model_id: str) -> None:
        """Fail at once, before the cache evicts anything for it, when a model clearly cannot
        load: a local folder that is not there, or, offline, a hub id absent from the cache.
        Anything else (a hub id online, a partial download) is found out by loading it."""
        if model_id == TINY_MODEL_ID:
            return  # built on demand
        if model_kind(model_id) == "local":
            if not Path(model_id).expanduser().is_dir():
                raise unavailable(model_id, FileNotFoundError(model_id), "no such folder")
        elif self._offline and not _in_hub_cache(model_id, self._revisions.get(model_id)):
            raise unavailable(
                model_id, FileNotFoundError("model_index.json"), "it is not in the local cache"
            )

    def _load(self, model_id: str) -> Any:
        quiet_libraries()  # before _resolve: building the tiny model imports and saves, too
        source, is_local = self._resolve(model_id)
        revision = None if is_local else self._revisions.get(model_id)
        if revision is not None:
            log.info("loading %s at revision %s", model_id, revision)
        try:
            pipeline = self._from_pretrained(source, local_only=True, revision=revision)
        except (OSError, ValueError) as exc:
            if is_local:
                raise unavailable(model_id, exc, "its files cannot be loaded") from exc
            if self._offline:
                raise unavailable(model_id, exc, "it is not in the local cache (offline)") from exc
            if not _hub_reachable(self._probe_timeout):
                raise unavailable(
                    model_id, exc, "it is not in the local cache and the hub is unreachable"
                ) from exc
            log.info("downloading %s from the hub", model_id)
            try:
                pipeline = self._from_pretrained(source, local_only=False, revision=revision)
            except (OSError, ValueError) as download_exc:
                raise unavailable(model_id, download_exc, "the download failed") from download_exc
        return self._prepare(pipeline)

    def _resolve(self, model_id: str) -> tuple[str, bool]:
        if model_id == TINY_MODEL_ID:
            return str(ensure_tiny_model(self._models_dir)), True
        if model_kind(model_id) == "local":
            return str(Path(model_id).expanduser()), True
        return model_id, False

    def _from_pretrained(self, source: str, local_only: bool, revision: str | None = None) -> Any:
        from diffusers import AutoPipelineForText2Image  # heavy import, done on the engine thread

        kwargs: dict[str, Any] = {
            "dtype": self._placement.dtype,
            "use_safetensors": True,  # never unpickle .bin weights
            "local_files_only": local_only,
        }
        if revision is not None:  # else the hub's main branch
            kwargs["revision"] = revision
        if self._placement.dtype == torch.float16:
            try:
                return AutoPipelineForText2Image.from_pretrained(source, variant="fp16", **kwargs)
            except (OSError, ValueError):
                pass  # no fp16 variant files: load the full-precision files and cast
        return AutoPipelineForText2Image.from_pretrained(source, **kwargs)

    def _prepare(self, pipeline: Any) -> Any:
        if self._placement.device == "cuda":
            self._tune_for_cuda(pipeline)
        pipeline = self._place(pipeline)
        self._save_memory(pipeline)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _place(self, pipeline: Any) -> Any:
        """On the device, or left on the CPU with accelerate's hooks moving its parts to the
        device while they run (CPU_OFFLOAD): the pipeline must then never be moved itself."""
        device = self._placement.device
        if self._tuning.cpu_offload == "model":
            pipeline.enable_model_cpu_offload(device=device)
            return pipeline
        if self._tuning.cpu_offload == "sequential":
            pipeline.enable_sequential_cpu_offload(device=device)
            return pipeline
        return pipeline.to(device)

    def _save_memory(self, pipeline: Any) -> None:
        """VAE slicing and tiling on the VAE itself (diffusers 0.42 has no pipeline-level
        enable_vae_* on SDXL any more), attention slicing on the pipeline."""
        if self._tuning.vae_slicing:
            pipeline.vae.enable_slicing()
        if self._tuning.vae_tiling:
            pipeline.vae.enable_tiling()
        if self._tuning.attention_slicing is not None:
            pipeline.enable_attention_slicing(self._tuning.attention_slicing)

    def _tune_for_cuda(self, pipeline: Any) -> None:
        """fp16 throughout: SDXL's stock VAE overflows in fp16, so the pipeline upcasts it to
        fp32 for the decode (the most expensive part of a 1-step image) unless an fp16-safe VAE
        replaces it. Attention already uses torch's SDPA kernels (diffusers' default)."""
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if self._tuning.fp16_vae:
            from diffusers import AutoencoderKL

            pipeline.vae = AutoencoderKL.from_pretrained(
                self._tuning.fp16_vae,
                dtype=self._placement.dtype,
                use_safetensors=True,
                local_files_only=self._offline,
            )
            pipeline.vae.config.force_upcast = False
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
        if self._tuning.torch_compile:
            pipeline.unet = torch.compile(pipeline.unet, mode="max-autotune", fullgraph=True)


def import_pipeline_library() -> None:
    """diffusers' import (~2 s of CPU here, torch._dynamo's included) when the engine is built
    rather than at the first load: a worker builds its engine while it joins its group. The
    libraries are quieted first: their import warns, in plain text otherwise."""
    quiet_libraries()
    from diffusers import AutoPipelineForText2Image  # noqa: F401


def quiet_libraries() -> None:
    """No plain-text lines in the JSON log: progress bars off (loading and saving draw them,
    the pipeline call's own bar is turned off in _prepare) and the libraries' log records sent
    to the JSON handler. Here rather than at process start, where it would cost their import."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # huggingface_hub's bars as well
    route_library_logs()


def _in_hub_cache(model_id: str, revision: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, "model_index.json", revision=revision)
        return isinstance(found, str)
    except ValueError:  # not a valid repo id: from_pretrained will say why
        return True


def _hub_reachable(timeout: float) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
