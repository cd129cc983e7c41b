"""A worker process writes nothing but JSON lines, with the real ML libraries loaded.

Log shippers parse stdout/stderr one JSON object per line; a progress bar or a library's own
plain-text warning breaks that. Both tests run a separate process, so what they read is exactly
what the process wrote (pytest's own capture and logging plugins play no part).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.devtools.services import create_topics
from consumer.settings import Settings
from tests.integration.kafka_tools import collect_until, produce, request, results, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# What the worker's engine thread does on its first load, then one record from each library.
LIBRARY_SCRIPT = textwrap.dedent(
    """
    import logging, warnings
    from consumer.ops.logs import configure_logging
    configure_logging("INFO")
    from consumer.generation.engine.loading import quiet_libraries
    quiet_libraries()
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import logging as hub_logging, tqdm as hub_tqdm
    from transformers.utils import logging as transformers_logging
    transformers_logging.get_logger("transformers.x").warning("from transformers")
    transformers_logging.get_logger("transformers.x").info("transformers chatter")
    diffusers_logging.get_logger("diffusers.x").warning("from diffusers")
    hub_logging.get_logger("huggingface_hub.x").warning("from huggingface_hub")
    logging.getLogger("torch._dynamo").warning("from torch")
    for bar in (transformers_logging.tqdm, diffusers_logging.tqdm, hub_tqdm):
        list(bar(range(3), desc="a progress bar"))
    warnings.warn("from warnings")
    raise RuntimeError("from an uncaught exception")
    """
)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line must be a JSON object with a level and a message (splitlines also splits on
    the carriage returns a progress bar redraws with)."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        assert isinstance(entry, dict), f"not a JSON object: {line!r}"
        assert {"level", "msg"} <= entry.keys(), f"no level or msg: {line!r}"
        entries.append(entry)
    return entries


def test_library_records_bars_warnings_and_crashes_are_json_lines(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr[-3000:]  # the uncaught exception
    assert done.stdout == ""
    by_msg = {entry["msg"]: entry for entry in json_lines(done.stderr)}
    for library in ("transformers", "diffusers", "huggingface_hub", "torch"):
        assert by_msg[f"from {library}"]["level"] == "warning"
    assert "transformers chatter" not in by_msg  # library INFO stays out at LOG_LEVEL=INFO
    assert any("UserWarning: from warnings" in msg for msg in by_msg)
    assert "from an uncaught exception" in by_msg["uncaught exception"]["exc"]


def start_worker(settings: Settings, out: Path, err: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "HF_HUB_OFFLINE": "1"}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "--env-file", "/nonexistent", "run"],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )


async def test_a_worker_process_writes_only_json_lines(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # A fresh DATA_DIR: the process builds the tiny model itself, saving and all.
    settings = make_settings(data_dir=tmp_path / "data")
    await create_topics(settings.kafka_bootstrap_servers, [settings.request_topic], 1)
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    proc = start_worker(settings, out, err)
    ids = {"valid-1", "invalid-1"}
    try:
        valid = request("valid-1", steps=2)
        invalid = json.dumps({"request_id": "invalid-1", "prompt": ""}).encode()  # empty prompt
        await produce(settings.kafka_bootstrap_servers, settings.request_topic, [valid, invalid])
        records = await collect_until(
            settings.kafka_bootstrap_servers, settings.result_topic, ids, timeout=120
        )
        assert ids <= set(results(records)), err.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    entries = json_lines(out.read_text()) + json_lines(err.read_text())
    assert ids <= {entry.get("request_id") for entry in entries}  # both were logged, as JSON
    assert "worker stopped" in [entry["msg"] for entry in entries]
