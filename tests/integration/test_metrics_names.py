"""Every metric that an alert, a dashboard panel or a runbook query reads is one a running worker
really exports, with the labels it really has.

The worker runs on the session's broker and store with the tiny model, finishes one request (so the
labelled series exist), and its sidecar's /metrics page is scraped. The expressions come from
deploy/prometheus/alerts.yml and deploy/grafana/dashboards/sdxl-worker.json, parsed as PromQL (see
tests/unit/test_deploy_monitoring.py, which also shows that a misspelt name fails). KEDA's scaler
reads lag from Kafka, not from Prometheus: tests/unit/test_deploy_kubernetes.py compares its group,
topic and brokers with the ConfigMap instead.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from consumer.devtools.services import free_port
from consumer.settings import Settings
from tests.integration.kafka_tools import collect, produce, request, running_worker, wait_until
from tests.unit.test_deploy_monitoring import (
    EXTERNAL_METRICS,
    all_queries,
    exported_metrics,
    parse_query,
    problems,
    static_exposition,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def scrape_after_one_request(settings: Settings) -> str:
    from consumer.ops.sidecar import SidecarConfig, start_sidecar

    async with running_worker(settings) as worker, aiohttp.ClientSession() as http:
        runner = await start_sidecar(SidecarConfig.from_settings(settings), worker)
        try:
            await wait_until(lambda: worker.ready, 60, "partitions assigned")
            bootstrap = settings.kafka_bootstrap_servers
            await produce(bootstrap, settings.request_topic, [request("names-1")])
            assert await collect(bootstrap, settings.result_topic, 1)
            async with http.get(f"http://127.0.0.1:{settings.app_port}/metrics") as response:
                assert response.status == 200
                return await response.text()
        finally:
            await runner.cleanup()


async def test_alerts_and_dashboard_read_what_a_running_worker_exports(
    make_settings: Callable[..., Settings],
) -> None:
    text = await scrape_after_one_request(make_settings(app_port=free_port()))
    exported = exported_metrics(text)
    # The run produced the labelled series, so their labels are checked too.
    assert {"status", "model"} <= (exported["image_generations_total"] or set())
    assert exported["consumer_lag"] == {"partition"}
    assert exported["model_load_seconds"] == {"model"}

    failures = {where: problems(expr, exported) for where, expr in all_queries()}
    assert not {where: found for where, found in failures.items() if found}

    used = set().union(*(parse_query(expr).metrics for _, expr in all_queries()))
    assert used - EXTERNAL_METRICS.keys() <= exported.keys()
    # The unit tests' in-process registry exports exactly what the running worker does.
    assert exported_metrics(static_exposition()).keys() == exported.keys()
