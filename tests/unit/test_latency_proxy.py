"""benchmarks/latency_proxy.py, the latency line of benchmarks/worker_process.py: it passes
requests and answers through unchanged, holds each request for its delay, and counts requests by
method and by what they touch. Timing is checked from below only (a busy box is slow)."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.latency_proxy import LatencyProxy, classify

DELAY = 0.15


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with `<METHOD> <path> <body length>`, on a kept-alive connection."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()  # the empty trailer
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        text = f"{self.command} {self.path} {len(body)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_PUT = do_DELETE = do_POST = _answer

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def _calls(port: int) -> list[tuple[str, float]]:
    """Five requests on one kept-alive connection: (answer, seconds it took) each."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        requests: list[tuple[str, str, bytes | None, dict[str, str]]] = [
            ("GET", "/images/pre/r1/?list-type=2&prefix=pre%2Fr1%2F", None, {}),
            ("PUT", "/images/pre/r1/_attempt-17-ab", b"", {}),
            ("PUT", "/images/pre/r1/0.png", b"x" * 200_000, {}),
            ("HEAD", "/images/pre/r1/0.png", None, {}),
            ("DELETE", "/images/pre/r1/_attempt-17-ab", None, {}),
        ]
        for method, path, body, headers in requests:
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse().read().decode()
            out.append((answer, time.perf_counter() - started))
        started = time.perf_counter()  # a chunked body: its end is found from its chunks
        connection.request("POST", "/images?delete", body=iter([b"abc", b"defg"]))
        out.append((connection.getresponse().read().decode(), time.perf_counter() - started))
    finally:
        connection.close()
    return out


async def test_the_proxy_passes_requests_through_holds_each_and_counts_them(
    server: ThreadingHTTPServer,
) -> None:
    async with LatencyProxy("127.0.0.1", server.server_address[1], DELAY) as proxy:
        calls = await asyncio.to_thread(_calls, proxy.port)
        stats = proxy.stats
    answers = [answer for answer, _ in calls]
    assert answers == [
        "GET /images/pre/r1/?list-type=2&prefix=pre%2Fr1%2F 0",
        "PUT /images/pre/r1/_attempt-17-ab 0",
        "PUT /images/pre/r1/0.png 200000",
        "",
        "DELETE /images/pre/r1/_attempt-17-ab 0",
        "POST /images?delete 7",
    ]
    assert all(seconds >= DELAY for _, seconds in calls)  # each request held, on one connection
    assert stats.connections == 1
    assert stats.unparsed == 0
    assert stats.total == 6
    assert dict(stats.by_method) == {"GET": 1, "PUT": 2, "HEAD": 1, "DELETE": 1, "POST": 1}
    assert dict(stats.by_kind) == {"listing": 1, "marker": 2, "image": 2, "batch-delete": 1}
    assert stats.by_method_kind["PUT marker"] == 1
    assert all(call.answered is not None and call.answered >= call.started for call in stats.calls)


async def test_without_a_delay_nothing_is_held_back_and_everything_is_still_counted(
    server: ThreadingHTTPServer,
) -> None:
    async with LatencyProxy("127.0.0.1", server.server_address[1], 0.0) as proxy:
        calls = await asyncio.to_thread(_calls, proxy.port)
    assert [answer for answer, _ in calls][2] == "PUT /images/pre/r1/0.png 200000"
    assert proxy.stats.total == 6


@pytest.mark.parametrize(
    ("method", "target", "kind"),
    [
        ("GET", "/bench/p/r-1/?list-type=2&prefix=p%2Fr-1%2F&max-keys=100", "listing"),
        ("GET", "/bench?list-type=2&prefix=p", "listing"),
        ("PUT", "/bench/p/r-1/_attempt-1733100000000-3f2a", "marker"),
        ("DELETE", "/bench/p/r-1/_attempt-1733100000000-3f2a", "marker"),
        ("PUT", "/bench/p/r-1/0.png", "image"),
        ("HEAD", "/bench/p/r-1/1.webp", "image"),
        ("HEAD", "/bench", "bucket"),
        ("POST", "/bench?delete", "batch-delete"),
        ("GET", "/bench/p/r-1/notes.txt", "other"),
    ],
)
def test_store_calls_are_classified_by_what_they_touch(method: str, target: str, kind: str) -> None:
    assert classify(method, target) == kind
