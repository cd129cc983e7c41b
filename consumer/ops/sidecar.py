"""The aiohttp sidecar: health, readiness, models, metrics and an API-key protected purge."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.generation.engine import Engine
from consumer.generation.engine.catalog import describe_models
from consumer.ops.metrics import WorkerMetrics
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
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


@dataclass
class PurgeState:
    last: float = -math.inf  # time.monotonic() of the last purge


PURGE_STATE: web.AppKey[PurgeState] = web.AppKey("purge_state", PurgeState)


def build_app(settings: Settings, worker: WorkerStatus) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[WORKER] = worker
    app[SETTINGS] = settings
    app[PURGE_STATE] = PurgeState()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/models/purge", purge)
    if settings.metrics_enabled:
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
            "default_model": request.app[SETTINGS].default_model,
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
    settings = request.app[SETTINGS]
    loaded = request.app[WORKER].engine.loaded_models()
    return web.json_response(
        {
            "models": list(settings.allowed_models),
            "default_model": settings.default_model,
            "loaded": loaded,
            "max_request_cost": settings.max_request_cost,
            "details": describe_models(list(settings.allowed_models), loaded),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[WORKER].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def purge(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    refusal = _purge_refusal(request, settings)
    if refusal is not None:
        return refusal
    model_id = await _purge_target(request)
    if isinstance(model_id, web.Response):
        return model_id
    request.app[PURGE_STATE].last = time.monotonic()
    engine = request.app[WORKER].engine
    result = await asyncio.get_running_loop().run_in_executor(None, engine.purge, model_id)
    log.info("purge", extra={"model_id": model_id, "removed": result.removed})
    return web.json_response(result.as_dict())


def _purge_refusal(request: web.Request, settings: Settings) -> web.Response | None:
    """401 without a valid key (REQUIRE_API_KEY); 403 when the sidecar listens beyond loopback
    with no key required: anyone on the network could empty the cache and make every next
    request pay a model load; 429 more often than once per PURGE_MIN_INTERVAL_SECONDS."""
    if settings.require_api_key:
        if not key_is_valid(request.headers.get("X-API-Key"), settings.valid_api_keys()):
            return _error(401, "unauthorized", "missing or invalid X-API-Key")
    elif not is_loopback(settings.app_host):
        message = "purge needs REQUIRE_API_KEY when the sidecar listens beyond loopback"
        return _error(403, "forbidden", message)
    wait = request.app[PURGE_STATE].last + settings.purge_min_interval_seconds - time.monotonic()
    if wait > 0:
        response = _error(429, "too_many_requests", "purge was called moments ago; retry later")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


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


def key_is_valid(given: str | None, valid: list[str]) -> bool:
    """Constant time over digests, so neither the key nor its length leaks through timing."""
    if not given or not valid:
        return False
    digest = hashlib.sha256(given.encode()).digest()
    matches = [hmac.compare_digest(digest, hashlib.sha256(k.encode()).digest()) for k in valid]
    return any(matches)


async def start_sidecar(settings: Settings, worker: WorkerStatus) -> web.AppRunner:
    runner = web.AppRunner(build_app(settings, worker), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.app_host, settings.app_port)
    await site.start()
    log.info("sidecar listening", extra={"host": settings.app_host, "port": settings.app_port})
    return runner
