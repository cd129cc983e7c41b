"""`python -m consumer submit` and `cancel`: the command line on top of GenerationClient."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, TextIO
from urllib.parse import urlparse

from consumer.client.generation_client import BrokerUnavailable, GenerationClient
from consumer.settings import Settings
from schemas import GenerationResult, ProgressEvent

_BAR_WIDTH = 24
_DRAIN_SECONDS = 1.0


async def submit_and_wait(
    settings: Settings,
    request: dict[str, object],
    wait_seconds: float,
    show_progress: bool = False,
    priority: bool = False,
) -> GenerationResult | None:
    """Listen from the end of the result topic, send (`priority`: to PRIORITY_TOPIC), wait;
    None if no result in time.

    On stderr: plain "waiting..." lines, or with `show_progress` the request's progress events
    (a bar redrawn in place on a terminal, one line per event otherwise)."""
    started = time.monotonic()
    try:
        client = GenerationClient(settings, connect_timeout=wait_seconds, priority=priority)
        topic = client.request_topic()  # before connecting: no priority lane, no start
        async with client:
            request_id = await client.submit(request)
            print(f"submitted {request_id} to {topic}", file=sys.stderr)
            interactive = sys.stderr.isatty()
            reporter = (
                _report_progress(client, request_id, started, interactive)
                if show_progress
                else _report_waiting(started, interactive)
            )
            task = asyncio.create_task(reporter)
            result = None
            try:
                left = wait_seconds - (time.monotonic() - started)
                result = await client.wait(request_id, max(left, 0.0))
                if show_progress and result is not None:
                    # Events fetched with the result are still to be printed; progress() ends
                    # by itself once they are.
                    await asyncio.wait([task], timeout=_DRAIN_SECONDS)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    except BrokerUnavailable:
        return None  # no broker within the wait
    prefix = "\r" if interactive else ""
    if result is None:
        print("", file=sys.stderr)
    else:
        print(f"{prefix}result after {time.monotonic() - started:.1f}s" + " " * 40, file=sys.stderr)
    return result


async def _report_waiting(started: float, interactive: bool) -> None:
    while True:
        elapsed = time.monotonic() - started
        if interactive:
            print(f"\rwaiting for the result... {elapsed:4.0f}s", end="", file=sys.stderr)
            sys.stderr.flush()
        elif int(elapsed) % 5 == 0:
            print(f"waiting for the result... {elapsed:.0f}s", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)


async def _report_progress(
    client: GenerationClient, request_id: str, started: float, interactive: bool
) -> None:
    async for event in client.progress(request_id):
        line = render_progress(event, time.monotonic() - started, bar=interactive)
        _show(line, interactive, sys.stderr)


def render_progress(event: ProgressEvent, elapsed: float, bar: bool) -> str:
    """One progress line: with `bar` "[#########...............] 3/8 steps      4.2s", else
    "progress: step 3/8 (4.2s)" (for logs and pipes)."""
    steps = _steps(event)
    if not bar:
        return f"progress: {event.stage}{' ' + steps if steps else ''} ({elapsed:.1f}s)"
    filled = round((event.fraction or 0.0) * _BAR_WIDTH)
    label = f"{steps} steps" if event.stage == "step" else event.stage
    return f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {label:<12} {elapsed:5.1f}s"


def _steps(event: ProgressEvent) -> str:
    if event.step is None:
        return ""
    return f"{event.step}/{event.total_steps}" if event.total_steps else str(event.step)


def _show(line: str, interactive: bool, stream: TextIO) -> None:
    if interactive:
        print(f"\r{line}", end="", file=stream, flush=True)
    else:
        print(line, file=stream, flush=True)


async def cancel(settings: Settings, request_id: str, connect_timeout: float = 30.0) -> bool:
    """Send a cancel command for `request_id`; False when no broker answered."""
    try:
        async with GenerationClient(
            settings, listen=False, connect_timeout=connect_timeout
        ) as client:
            await client.cancel(request_id)
    except BrokerUnavailable:
        return False
    return True


_DOWNLOADABLE = ("http", "https")


class DownloadRefused(ValueError):
    """A URL --save does not fetch: a result names whatever its producer wrote, and only a
    worker's image URLs (presigned or BASE_URL, http(s)) are worth a download."""


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only; urllib's own handler also follows them to ftp://."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        _check_scheme(newurl, "a redirect to")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_scheme(url: str, what: str) -> None:
    scheme = urlparse(url).scheme.lower()
    if scheme not in _DOWNLOADABLE:
        raise DownloadRefused(
            f"not saved: {what} a {scheme or 'relative'!r} URL; --save downloads http(s) URLs only"
        )


def _http_opener() -> urllib.request.OpenerDirector:
    """An opener that knows http and https and nothing else (no file:, ftp: or data: handler,
    as urllib.request.build_opener would add)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpRedirectsOnly(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def download(url: str, target: Path) -> Path:
    """Fetch an image's http(s) URL (presigned or BASE_URL) to `target`. Any other URL (a
    file:// of a local store included) raises DownloadRefused, and so does a redirect to one,
    before anything is read or written."""
    _check_scheme(url, "the result names")
    with _http_opener().open(url, timeout=30) as response:
        data = response.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def run_submit(
    settings: Settings,
    request: dict[str, object],
    wait: float,
    show_progress: bool = False,
    priority: bool = False,
) -> GenerationResult | None:
    return asyncio.run(submit_and_wait(settings, request, wait, show_progress, priority))


def run_cancel(settings: Settings, request_id: str) -> bool:
    return asyncio.run(cancel(settings, request_id))
