"""Structured JSON logs: one object per line (the per-request line is written by
consumer/output/answers.py)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from types import TracebackType

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Libraries that add their own plain-text console handler to their loggers when imported.
_ML_LIBRARIES = ("torch", "transformers", "diffusers", "huggingface_hub")
# Chatty below WARNING: kept at WARNING or above whatever LOG_LEVEL says.
_NOISY = ("aiokafka", "botocore", "urllib3", *_ML_LIBRARIES)


def configure_logging(level: str = "INFO") -> None:
    """Everything the process reports goes to stderr as one JSON object per line (log shippers
    parse it line by line): log records, `warnings.warn` and uncaught exceptions."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # also torch's C++ warnings, which arrive as Python warnings
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    route_library_logs()


def route_library_logs() -> None:
    """Send the ML libraries' records to the root JSON handler instead of their own.

    transformers, diffusers, huggingface_hub and torch each attach a plain StreamHandler to their
    loggers on import (all but huggingface_hub also turn propagation off), so their warnings
    bypass the JSON handler. This only touches libraries already imported, so it never pays for
    an import: call it again right after the code first imports them. Idempotent.
    """
    level = max(logging.WARNING, logging.getLogger().level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(level)  # imports reset their own level: set it again
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.split(".")[0] not in _ML_LIBRARIES:
            continue
        # Exactly StreamHandler: their console handlers; a FileHandler someone asked for stays.
        console = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for console_handler in console:
            logger.removeHandler(console_handler)
        if console:
            logger.propagate = True


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    # Python's default hook prints a multi-line traceback; this keeps it one JSON line.
    logging.getLogger("consumer").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return  # as the default hook: a thread's SystemExit is not an error
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("consumer").critical(
        "uncaught exception in thread %s",
        thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
