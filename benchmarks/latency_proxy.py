"""A latency line in front of an HTTP server (the S3 endpoint): an asyncio TCP proxy on 127.0.0.1.

Each HTTP request that a client starts on a connection is held `delay` seconds before its first
bytes go on to the server, as a network round trip to a remote store would hold it; the rest of
the request (its body) and the responses pass at once. It also counts the requests by method and by
what they touch (`classify`), from the request lines of the client -> server stream: boto3 keeps
connections alive and sends one request at a time on each, so a request's end is known from its
Content-Length (or its chunked body) and the next bytes start the next request.

A benchmark tool (benchmarks/worker_process.py), not part of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

LOCALHOST = "127.0.0.1"
_CHUNK = 64 * 1024
# A request head (request line and headers) longer than this is not HTTP we understand.
_MAX_HEAD = 64 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MARKER = "_attempt-"


def classify(method: str, target: str) -> str:
    """What a store call touches: `listing` (a ListObjects GET), `marker` (an attempt marker,
    `<prefix>/<request_id>/_attempt-...`), `image` (an image object), `batch-delete` (a
    DeleteObjects POST), `bucket` (the bucket itself: HeadBucket, CreateBucket) or `other`."""
    parts = urlsplit(target)
    path, query = unquote(parts.path), parts.query
    key = path.lstrip("/").partition("/")[2]
    if method == "POST" and "delete" in query.split("&"):
        return "batch-delete"
    if method == "GET" and ("list-type=" in query or not key):
        return "listing"
    if not key:
        return "bucket"
    name = key.rsplit("/", 1)[-1]
    if name.startswith(MARKER):
        return "marker"
    if name.lower().endswith(IMAGE_SUFFIXES):
        return "image"
    return "other"


@dataclass
class Call:
    method: str
    kind: str
    target: str  # the request line's target: path and query
    started: float  # time.time() when the request's first bytes reached the proxy
    answered: float | None = None  # time.time() of the first response bytes after it


@dataclass
class ProxyStats:
    by_method: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_method_kind: Counter[str] = field(default_factory=Counter)
    calls: list[Call] = field(default_factory=list)
    connections: int = 0
    unparsed: int = 0  # streams whose bytes were not HTTP/1.1 requests as expected

    @property
    def total(self) -> int:
        return sum(self.by_method.values())

    def record(self, method: str, target: str) -> Call:
        kind = classify(method, target)
        self.by_method[method] += 1
        self.by_kind[kind] += 1
        self.by_method_kind[f"{method} {kind}"] += 1
        call = Call(method, kind, target, time.time())
        self.calls.append(call)
        return call

    def reset(self) -> None:
        self.by_method.clear()
        self.by_kind.clear()
        self.by_method_kind.clear()
        self.calls.clear()


class _RequestParser:
    """Finds where requests start in one connection's client -> server bytes."""

    def __init__(self) -> None:
        self._head = b""  # bytes of a request head not complete yet
        self._body_left = 0  # bytes of the current request's body still to come
        self._chunked = False  # the current body is chunked; _chunk_buf holds its unread part
        self._chunk_buf = b""
        self.broken = False

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """(method, target) of each request whose head completes in `data`. Call `starts`
        first to know whether `data` begins a new request."""
        found: list[tuple[str, str]] = []
        while data and not self.broken:
            if self._body_left:
                taken = min(self._body_left, len(data))
                self._body_left -= taken
                data = data[taken:]
            elif self._chunked:
                data = self._feed_chunked(data)
            else:
                data = self._feed_head(data, found)
        return found

    @property
    def between_requests(self) -> bool:
        return not (self._head or self._body_left or self._chunked or self.broken)

    def _feed_head(self, data: bytes, found: list[tuple[str, str]]) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                self.broken = True
            return b""
        head, rest = self._head[:end], self._head[end + 4 :]
        self._head = b""
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
            self.broken = True
            return b""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        found.append((request_line[0], request_line[1]))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        else:
            self._body_left = int(headers.get("content-length", "0") or 0)
        return rest

    def _feed_chunked(self, data: bytes) -> bytes:
        """Consume a chunked body: size line, data, CRLF ... until the 0-size chunk and its
        (empty) trailer."""
        buf = self._chunk_buf + data
        self._chunk_buf = b""
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                self._chunk_buf = buf
                return b""
            size_text = buf[:line_end].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self.broken = True
                return b""
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    self._chunk_buf = buf
                    return b""
                self._chunked = False
                return buf[trailer_end + 4 :]
            need = line_end + 2 + size + 2
            if len(buf) < need:
                self._chunk_buf = buf
                return b""
            buf = buf[need:]


class LatencyProxy:
    """`async with LatencyProxy(host, port, delay) as proxy:` clients connect to proxy.port."""

    def __init__(self, upstream_host: str, upstream_port: int, delay: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def start(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._serve, LOCALHOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> LatencyProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), 10
            )
            up_writer = upstream_writer
            pending: list[Call] = []  # calls sent on and not answered yet, in order
            upstream = asyncio.create_task(self._to_server(reader, upstream_writer, pending))
            downstream = asyncio.create_task(self._to_client(up_reader, writer, pending))
            _, undone = await asyncio.wait(
                {upstream, downstream}, return_when=asyncio.FIRST_COMPLETED
            )
            if upstream not in undone:  # the client finished sending: let the answer through
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(downstream), 30)
            for pump in (upstream, downstream):
                pump.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
        except (OSError, TimeoutError):
            pass
        except asyncio.CancelledError:  # stop(): the connection ends here, quietly (asyncio's
            pass  # server logs a handler that ends cancelled as an error)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: list[Call]
    ) -> None:
        parser = _RequestParser()
        while data := await reader.read(_CHUNK):
            new_request = parser.between_requests
            broken = parser.broken
            for method, target in parser.feed(data):
                pending.append(self.stats.record(method, target))
            if parser.broken and not broken:
                self.stats.unparsed += 1
            if new_request and self.delay > 0:
                await asyncio.sleep(self.delay)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def _to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: list[Call]
    ) -> None:
        while data := await reader.read(_CHUNK):
            # One request at a time per connection: the first bytes after a request was sent on
            # are its answer (an interim 100 Continue included).
            unanswered = [call for call in pending if call.answered is None]
            if unanswered:
                unanswered[0].answered = time.time()
                pending.remove(unanswered[0])
            writer.write(data)
            await writer.drain()
