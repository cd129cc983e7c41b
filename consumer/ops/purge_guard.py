"""The purge endpoint's guards, apart from aiohttp: which keys are valid (in constant time),
which hosts are loopback, and how many failed keys a peer may send before it has to wait."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


class FailureLimiter:
    """Failed purge keys per peer address, in a sliding window: at `limit` failures a peer waits
    until the oldest of them is `window_seconds` old. Remembers at most `max_peers` peers (the
    one that failed longest ago is forgotten first), so a scan from many addresses cannot grow
    it without end."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        max_peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_peers = max_peers
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, peer: str) -> int | None:
        """Whole seconds until `peer` may try a key again; None when it may now."""
        failures = self._recent(peer)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1, math.ceil(failures[0] + self.window_seconds - self._clock()))

    def record(self, peer: str) -> int:
        """Count one failed key of `peer`; how many it has within the window, this one too."""
        failures = self._recent(peer)
        if failures is None:
            failures = self._failures[peer] = deque(maxlen=max(self.limit, 1))
            while len(self._failures) > self.max_peers:
                self._failures.popitem(last=False)
        failures.append(self._clock())
        self._failures.move_to_end(peer)
        return len(failures)

    def _recent(self, peer: str) -> deque[float] | None:
        failures = self._failures.get(peer)
        if failures is None:
            return None
        horizon = self._clock() - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[peer]
            return None
        return failures


@dataclass
class PurgeState:
    failures: FailureLimiter
    last: float = -math.inf  # time.monotonic() of the last purge


def key_is_valid(given: str | None, valid: list[str]) -> bool:
    """Constant time over digests, so neither the key nor its length leaks through timing."""
    if not given or not valid:
        return False
    try:
        # aiohttp decodes header bytes that are not UTF-8 as lone surrogates (surrogateescape):
        # a strict encode() raised on them, and the purge answered 500 instead of 401.
        raw = given.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no header decoding produces: malformed all the same
        return False
    digest = hashlib.sha256(raw).digest()
    matches = [hmac.compare_digest(digest, hashlib.sha256(k.encode()).digest()) for k in valid]
    return any(matches)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
