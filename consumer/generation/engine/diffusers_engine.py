"""The real engine: diffusers pipelines from an LRU cache, one generator per image."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from consumer.generation.engine.activity import (
    COMPILING,
    GENERATING,
    LOADING,
    EngineActivity,
    PhaseMark,
)
from consumer.generation.engine.cache import CacheBackedEngine, ModelCache
from consumer.generation.engine.compiling import CompiledShapes, call_shape
from consumer.generation.engine.config import EngineConfig
from consumer.generation.engine.jobs import GenerationJob
from consumer.generation.engine.loading import (
    PipelineLoader,
    Tuning,
    choose_placement,
    import_pipeline_library,
)
from consumer.generation.engine.loras import LoraAdapters
from consumer.generation.engine.memory import free_memory, guard_generation, pipeline_bytes
from consumer.generation.engine.protocol import (
    EngineError,
    JobOutput,
    PurgeResult,
    StepHook,
    one_batch,
    split_outputs,
)
from consumer.generation.engine.steps import stop_reason
from schemas import ErrorCode

log = logging.getLogger(__name__)

_IMAGE_TO_IMAGE = "_worker_image_to_image"  # the pipeline attribute holding its img2img twin


class _Stop(Exception):
    """Raised from the step callback: stops the pipeline at once and leaves it usable."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class DiffusersEngine(CacheBackedEngine[Any]):
    def __init__(self, config: EngineConfig) -> None:
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self._placement = choose_placement(config.device)
        import_pipeline_library()
        loader = PipelineLoader(
            config.models_dir,
            self._placement,
            offline=config.offline,
            probe_timeout=config.hub_probe_timeout_seconds,
            tuning=Tuning(
                torch_compile=config.torch_compile,
                fp16_vae=config.fp16_vae,
                cpu_offload=config.cpu_offload,
                vae_slicing=config.vae_slicing,
                vae_tiling=config.vae_tiling,
                attention_slicing=config.attention_slicing,
            ),
            revisions=config.model_revisions,
        )
        self._loras = LoraAdapters(
            config.loras,
            config.models_dir,
            capacity=config.max_loras,
            offline=config.offline,
            retry_seconds=config.model_retry_seconds,
        )
        self.activity = EngineActivity()
        self._compiled_shapes = CompiledShapes()
        self._cache: ModelCache[Any] = ModelCache(
            self._watched(loader),
            config.max_models,
            on_unload=self._free,
            precheck=loader.check,
            max_bytes=config.max_cache_bytes,
            size_of=pipeline_bytes,
            retry_seconds=config.model_retry_seconds,
        )

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None = None,
        on_step: StepHook | None = None,
    ) -> list[JobOutput]:
        first = one_batch(jobs)
        shape = call_shape(jobs)
        with self._cache.use(first.model) as pipeline:
            self._use_loras(pipeline, first)
            compiles = _compiled(pipeline) and self._compiled_shapes.is_new(first.model, shape)
            with self.activity.phase(COMPILING if compiles else GENERATING, first.model) as phase:
                started = time.perf_counter()

                def compiled() -> None:
                    self._compiled_shapes.add(first.model, shape)

                total = first.denoising_steps
                guard = _step_guard(phase, timeout_seconds, cancel, on_step, total, compiled)
                images = self._run(pipeline, jobs, guard)
                duration = time.perf_counter() - started
            del pipeline  # leaving the block may unload it: no reference may outlive the block
        return split_outputs(jobs, images, duration)

    def _use_loras(self, pipeline: Any, job: GenerationJob) -> None:
        """The batch's adapters (1.2), before the call: loading one is a load for the watchdog,
        and not part of the generation's time limit."""
        if not job.loras:
            self._loras.apply(pipeline, job.model, ())  # turns adapters off, if any
            return
        with self.activity.phase(LOADING, job.model):
            self._loras.apply(pipeline, job.model, job.loras)

    def _run(self, pipeline: Any, jobs: Sequence[GenerationJob], guard: Any) -> list[Any]:
        first = jobs[0]
        prompts = [job.prompt for job in jobs for _ in job.seeds]
        negatives = [job.negative_prompt for job in jobs for _ in job.seeds]
        # CPU generators: the same seed gives the same initial noise on every device.
        generators = [torch.Generator("cpu").manual_seed(s) for job in jobs for s in job.seeds]

        run = pipeline
        kwargs: dict[str, Any] = {"width": first.width, "height": first.height}
        if first.init_image is not None:  # image-to-image (1.2): the same loaded components
            if any(job.input_pixels is None for job in jobs):
                raise EngineError(ErrorCode.INTERNAL_ERROR, "an init image was not read")
            run = image_to_image(pipeline)
            images = [job.input_pixels for job in jobs for _ in job.seeds]
            kwargs = {"image": images, "strength": first.strength}

        def call() -> Any:
            with torch.inference_mode():
                return run(
                    prompt=prompts,
                    negative_prompt=negatives,
                    num_inference_steps=first.steps,
                    guidance_scale=first.cfg,
                    generator=generators,
                    output_type="pil",
                    callback_on_step_end=guard,
                    **kwargs,
                )

        try:
            result = guard_generation(call, self._placement.device)  # out_of_memory, freed
        except _Stop as stop:
            raise EngineError(stop.code, str(stop)) from None
        except (RuntimeError, ValueError, TypeError) as exc:
            raise EngineError(ErrorCode.GENERATION_FAILED, f"generation failed: {exc}") from exc
        return list(result.images)

    def purge(self, model_id: str | None = None) -> PurgeResult:
        """As the cache's purge; failed adapter loads (1.2) are forgotten too."""
        self._loras.forget()
        return super().purge(model_id)

    def describe(self) -> dict[str, object]:
        return {
            "engine": "diffusers",
            "device": self._placement.device,
            "dtype": str(self._placement.dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(),
            **self._cache.describe(),
        }

    def _free(self, model_ids: list[str]) -> None:
        """The cache no longer references these pipelines: give their memory back."""
        log.info("unloaded model(s) %s", ", ".join(model_ids))
        self._compiled_shapes.forget(model_ids)  # loaded again, they compile again
        free_memory(self._placement.device)


def image_to_image(pipeline: Any) -> Any:
    """The image-to-image pipeline made of `pipeline`'s own components (`from_pipe`: no weights
    copied, adapters shared), made once and kept on it, so it goes when the model does."""
    made = getattr(pipeline, _IMAGE_TO_IMAGE, None)
    if made is None:
        from diffusers import AutoPipelineForImage2Image

        # Each call of a VAE that must run in fp32 (force_upcast: SDXL's stock VAE) casts it
        # there and back to encode the input, and diffusers warns about it every time.
        logging.getLogger("diffusers.models.modeling_utils").addFilter(_quiet_upcast)

        made = AutoPipelineForImage2Image.from_pipe(pipeline)
        made.set_progress_bar_config(disable=True)
        setattr(pipeline, _IMAGE_TO_IMAGE, made)
    return made


def _quiet_upcast(record: logging.LogRecord) -> bool:
    return "should be kept in float32" not in record.getMessage()


def _compiled(pipeline: Any) -> bool:
    """Whether the pipeline's UNet went through torch.compile (loading.py, TORCH_COMPILE)."""
    return hasattr(getattr(pipeline, "unet", None), "_orig_mod")


def _step_guard(
    phase: PhaseMark,
    timeout_seconds: float,
    cancel: threading.Event | None,
    on_step: StepHook | None,
    total: int,
    compiled: Callable[[], None],
) -> Any:
    """A `callback_on_step_end` that reports each step to the watchdog (`phase`) and stops the
    run at the next step boundary when the timeout has passed, the worker abandons the batch,
    or `on_step` stops some of its requests (it raises RequestsStopped, which ends the pipeline
    call). Nothing can interrupt the middle of a step. The timeout counts from the call's start,
    or, when the call compiles (phase `compiling`), from the end of its first step, where the
    compilation is over (`compiled` is called there)."""
    started = time.perf_counter()

    def on_step_end(
        pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        nonlocal started
        if phase.step():
            compiled()
            started = time.perf_counter()
        stop = stop_reason(started, timeout_seconds, cancel, step)
        if stop is not None:
            raise _Stop(*stop)
        if on_step is not None:
            on_step(step + 1, total)
        return callback_kwargs

    return on_step_end
