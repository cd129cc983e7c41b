"""The aiohttp sidecar: health, readiness, models, metrics and an API-key protected purge."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.generation.engine import Engine
from consumer.generation.engine.catalog import describe_models
from consumer.ops.metrics import WorkerMetrics
from consumer.ops.purge_guard import FailureLimiter, PurgeState, is_loopback, key_is_valid

if TYPE_CHECKING:
    from consumer.settings import Settings

log = logging.getLogger(__name__)


class WorkerStatus(Protocol):
    """What the sidecar reads of a worker (and the engine it purges)."""

    engine: Engine
    metrics: WorkerMetrics
    draining: bool

    @property
    def unhealthy(self) -> str | None:
        """Why the watchdog gave up; None while healthy."""

    @property
    def completed(self) -> int: ...

    @property
    def broker_connected(self) -> bool: ...

    def not_ready_reason(self) -> str | None: ...

    def assignment(self) -> list[TopicPartition]: ...


WORKER: web.AppKey[WorkerStatus] = web.AppKey("worker", WorkerStatus)


@dataclass(frozen=True)
class SidecarConfig:
    host: str
    port: int  # 0: no sidecar
    allowed_models: tuple[str, ...]
    default_model: str
    max_request_cost: float
    metrics_enabled: bool
    require_api_key: bool
    # The accepted purge keys: compared as digests, never logged, never in a response.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    purge_min_interval_seconds: float = 0.0
    # Failed keys per peer address: after this many within the window, 429 without a key check.
    purge_failure_limit: int = 5
    purge_failure_window_seconds: float = 60.0
    engine: str = "diffusers"  # ENGINE: `simulated` is said in /v1/models
    model_revisions: Mapping[str, str] = field(default_factory=dict)  # pinned hub models
    # 1.2: the LoRA adapters requests may name (their names and pins; never their sources).
    loras: Mapping[str, str | None] = field(default_factory=dict)
    max_loras_per_request: int = 0
    input_prefix: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> SidecarConfig:
        return cls(
            host=settings.app_host,
            port=settings.app_port,
            allowed_models=tuple(settings.allowed_models),
            default_model=settings.default_model,
            max_request_cost=settings.max_request_cost,
            metrics_enabled=settings.metrics_enabled,
            require_api_key=settings.require_api_key,
            api_keys=tuple(settings.valid_api_keys()),
            purge_min_interval_seconds=settings.purge_min_interval_seconds,
            engine=settings.engine,
            model_revisions=settings.pinned_revisions(),
            loras={name: settings.lora_revisions.get(name) for name in settings.allowed_loras},
            max_loras_per_request=settings.max_loras_per_request,
            input_prefix=settings.input_prefix,
        )


CONFIG: web.AppKey[SidecarConfig] = web.AppKey("config", SidecarConfig)


PURGE_STATE: web.AppKey[PurgeState] = web.AppKey("purge_state", PurgeState)


def build_app(config: SidecarConfig, worker: WorkerStatus) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[WORKER] = worker
    app[CONFIG] = config
    app[PURGE_STATE] = PurgeState(
        FailureLimiter(config.purge_failure_limit, config.purge_failure_window_seconds)
    )
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/models/purge", purge)
    if config.metrics_enabled:
        app.router.add_get("/metrics", metrics)
    return app


def _status(worker: WorkerStatus, not_ready: str | None) -> str:
    if worker.unhealthy:
        return "unhealthy"
    if worker.draining:
        return "draining"
    return "ok" if not_ready is None else "starting"


async def health(request: web.Request) -> web.Response:
    """Liveness with readiness detail: 200 while the worker works (or waits for work or for a
    broker), 503 once the watchdog found it hung (a stuck engine call, a stalled intake)."""
    worker = request.app[WORKER]
    not_ready = worker.not_ready_reason()
    return web.json_response(
        {
            "status": _status(worker, not_ready),
            "reason": worker.unhealthy,
            "ready": not_ready is None,
            "not_ready_reason": not_ready,
            "broker_connected": worker.broker_connected,
            "partitions": [f"{tp.topic}:{tp.partition}" for tp in worker.assignment()],
            "models_loaded": worker.engine.loaded_models(),
            "default_model": request.app[CONFIG].default_model,
            "engine": worker.engine.describe(),
            "completed": worker.completed,
        },
        status=503 if worker.unhealthy else 200,
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 until partitions are assigned, while draining, while the image store is
    unreachable and once unhealthy; the reason says which."""
    worker = request.app[WORKER]
    reason = worker.not_ready_reason()
    body = {"ready": reason is None, "draining": worker.draining, "reason": reason}
    return web.json_response(body, status=200 if reason is None else 503)


async def models(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    loaded = request.app[WORKER].engine.loaded_models()
    return web.json_response(
        {
            "models": list(config.allowed_models),
            "default_model": config.default_model,
            "loaded": loaded,
            "max_request_cost": config.max_request_cost,
            "engine": config.engine,
            "details": describe_models(
                list(config.allowed_models), loaded, config.engine, config.model_revisions
            ),
            "loras": [{"name": n, "revision": r} for n, r in config.loras.items()],
            "max_loras_per_request": config.max_loras_per_request,
            "input_prefix": config.input_prefix,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[WORKER].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def purge(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    refusal = _purge_refusal(request, config)
    if refusal is not None:
        return refusal
    model_id = await _purge_target(request)
    if isinstance(model_id, web.Response):
        return model_id
    # The interval is checked and taken in one step, with no await between them: requests that
    # held back their bodies (and so passed any earlier check together) cannot both purge.
    state = request.app[PURGE_STATE]
    wait = state.last + config.purge_min_interval_seconds - time.monotonic()
    if wait > 0:
        return _too_many(wait, "purge was called moments ago; retry later")
    state.last = time.monotonic()
    engine = request.app[WORKER].engine
    result = await asyncio.get_running_loop().run_in_executor(None, engine.purge, model_id)
    log.info("purge", extra={"model_id": model_id, "removed": result.removed})
    return web.json_response(result.as_dict())


def _purge_refusal(request: web.Request, config: SidecarConfig) -> web.Response | None:
    """401 without a valid key (REQUIRE_API_KEY), and 429 without looking at the key once its
    peer failed purge_failure_limit times within purge_failure_window_seconds; 403 when the
    sidecar listens beyond loopback with no key required: anyone on the network could empty the
    cache and make every next request pay a model load; 429 more often than once per
    PURGE_MIN_INTERVAL_SECONDS (checked here too, so that a caller need not send its body)."""
    state = request.app[PURGE_STATE]
    if config.require_api_key:
        peer = request.remote or "unknown"
        retry_after = state.failures.retry_after(peer)
        if retry_after is not None:
            return _too_many(retry_after, "too many failed keys; retry later")
        if not key_is_valid(request.headers.get("X-API-Key"), list(config.api_keys)):
            failures = state.failures.record(peer)
            request.app[WORKER].metrics.purge_auth_failures.inc()
            # The peer, never the key: a near miss in a log would be half a secret.
            log.warning(
                "purge refused: missing or invalid X-API-Key",
                extra={"peer": peer, "failures_in_window": failures},
            )
            return _error(401, "unauthorized", "missing or invalid X-API-Key")
    elif not is_loopback(config.host):
        message = "purge needs REQUIRE_API_KEY when the sidecar listens beyond loopback"
        return _error(403, "forbidden", message)
    wait = state.last + config.purge_min_interval_seconds - time.monotonic()
    if wait > 0:
        return _too_many(wait, "purge was called moments ago; retry later")
    return None


def _too_many(wait: float, message: str) -> web.Response:
    response = _error(429, "too_many_requests", message)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _purge_target(request: web.Request) -> str | web.Response | None:
    if not request.can_read_body:
        return None
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("model_id", ""), str | None):
        return web.json_response(
            {"error": {"code": "invalid_request", "message": 'body must be {"model_id": str}'}},
            status=400,
        )
    model_id = body.get("model_id")
    return model_id if isinstance(model_id, str) else None


async def start_sidecar(config: SidecarConfig, worker: WorkerStatus) -> web.AppRunner:
    runner = web.AppRunner(build_app(config, worker), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    log.info("sidecar listening", extra={"host": config.host, "port": config.port})
    return runner
