"""configure_logging: whatever the process reports reaches stderr as one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.ops.logs import configure_logging, route_library_logs

ReadLines = Callable[[], list[dict[str, Any]]]
LIBRARIES = ("torch", "transformers", "diffusers", "huggingface_hub")


def _parse(line: str) -> dict[str, Any]:
    entry = json.loads(line)  # a plain-text line fails here
    assert isinstance(entry, dict), line
    assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
    return entry


@pytest.fixture
def json_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadLines]:
    """configure_logging on a fake stderr; every global it changes is put back after."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_hooks = (sys.excepthook, threading.excepthook)
    names = ("py.warnings", *LIBRARIES)
    saved = {
        name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in names
    }
    configure_logging("INFO")
    try:
        yield lambda: [_parse(line) for line in stderr.getvalue().splitlines()]
    finally:
        logging.captureWarnings(False)
        root.handlers[:], level = saved_root
        root.setLevel(level)
        sys.excepthook, threading.excepthook = saved_hooks
        for name, (level, propagate) in saved.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).propagate = propagate


def test_a_log_record_keeps_the_json_shape_with_its_extras(json_stderr: ReadLines) -> None:
    logging.getLogger("consumer.test").info("hello %s", "there", extra={"request_id": "r-1"})
    [entry] = json_stderr()
    assert entry["level"] == "info"
    assert entry["logger"] == "consumer.test"
    assert entry["msg"] == "hello there"
    assert entry["request_id"] == "r-1"


def test_warnings_warn_becomes_a_json_line(json_stderr: ReadLines) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("the thing is deprecated", UserWarning, stacklevel=1)
    [entry] = json_stderr()
    assert entry["level"] == "warning"
    assert entry["logger"] == "py.warnings"
    assert "UserWarning: the thing is deprecated" in entry["msg"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_console_handler_is_replaced_by_the_json_one(
    json_stderr: ReadLines, library: str
) -> None:
    # What these libraries do on import: a plain StreamHandler of their own, propagation off.
    logger = logging.getLogger(f"{library}.test_logs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[{library}] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logging.getLogger(library).setLevel(logging.NOTSET)  # imports reset the level, too
    try:
        route_library_logs()
        logger.warning("careful with %s", library)
        logger.info("library chatter")  # below WARNING: dropped at LOG_LEVEL=INFO
        [entry] = json_stderr()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert entry == {**entry, "level": "warning", "logger": f"{library}.test_logs"}
    assert entry["msg"] == f"careful with {library}"
    assert handler not in logger.handlers


def test_a_file_handler_on_a_library_logger_is_left_alone(
    json_stderr: ReadLines, tmp_path: Path
) -> None:
    logger = logging.getLogger("torch.test_logs_file")
    handler = logging.FileHandler(tmp_path / "torch.log")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        route_library_logs()
        assert logger.handlers == [handler]
        assert logger.propagate is False
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = True


def test_an_uncaught_exception_is_one_json_line(json_stderr: ReadLines) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        kind, value, tb = sys.exc_info()
    assert kind is not None and value is not None
    sys.excepthook(kind, value, tb)
    [entry] = json_stderr()
    assert entry["level"] == "critical"
    assert entry["msg"] == "uncaught exception"
    assert "RuntimeError: boom" in entry["exc"]


def test_an_uncaught_exception_in_a_thread_is_one_json_line(json_stderr: ReadLines) -> None:
    # pytest wraps threading.excepthook while a test runs, so the hook is called as Python would.
    error = ValueError("bad thread")
    args = threading.ExceptHookArgs([ValueError, error, None, threading.current_thread()])
    threading.excepthook(args)
    [entry] = json_stderr()
    assert entry["level"] == "critical"
    assert entry["msg"].startswith("uncaught exception in thread ")
    assert "ValueError: bad thread" in entry["exc"]
