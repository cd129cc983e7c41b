"""What a broker does with a fetch that finds no records: the latency of one record sent to an
idle consumer, for several `fetch_max_wait_ms` (KAFKA_FETCH_MAX_WAIT_MS, docs/operations.md),
with the consumer on that record's topic alone and on it beside an empty one (as a worker is, on
its request and priority topics).

`python -m benchmarks.fetch_wait [--bootstrap HOST:PORT] [--records 15]`. Without --bootstrap it
starts the embedded Tansu on 127.0.0.1 in a temporary folder. A broker that answers a held fetch
as soon as records arrive (Kafka) shows a few ms at every wait; one that holds a fetch for the
whole wait shows latencies spread over [0, wait] (Tansu, beside an empty topic). Each record is
sent at a random moment (50-300 ms after the last one arrived), so it lands anywhere in a held
fetch. A benchmark: it prints what it measured and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.devtools.services import TansuBroker, create_topics

WAITS_MS = (10, 25, 50, 100, 200, 500)
RECEIVE_TIMEOUT_S = 5.0


async def latencies(bootstrap: str, wait_ms: int, records: int, beside: bool) -> list[float]:
    """Milliseconds from each send to its arrival at a consumer with this fetch wait; `beside`:
    the consumer also reads a topic that stays empty."""
    topic = f"fetch-wait-{wait_ms}-{uuid.uuid4().hex[:6]}"
    topics = [topic, f"{topic}.empty"] if beside else [topic]
    await create_topics(bootstrap, topics, 1)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=wait_ms,
        auto_offset_reset="earliest",
        group_id=f"{topic}.g",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        await asyncio.sleep(1.0)  # the group joined, fetches running
        got = []
        for _ in range(records):
            await asyncio.sleep(random.uniform(0.05, 0.3))
            sent = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            await asyncio.wait_for(consumer.getone(), RECEIVE_TIMEOUT_S)
            got.append((time.perf_counter() - sent) * 1000)
        return got
    finally:
        await consumer.stop()
        await producer.stop()


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory() as folder, TansuBroker(Path(folder)).start() as tansu:
        yield tansu.bootstrap_servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="a running broker (default: Tansu)")
    parser.add_argument("--records", type=int, default=15)
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        print(f"broker {bootstrap}: latency of one record sent to an idle consumer")
        for wait_ms in WAITS_MS:
            line = f"  fetch_max_wait_ms {wait_ms:4d}:"
            for beside, what in ((False, "its topic alone"), (True, "beside an empty topic")):
                got = sorted(asyncio.run(latencies(bootstrap, wait_ms, args.records, beside)))
                line += f"  {what} p50 {statistics.median(got):5.1f} max {got[-1]:5.1f} ms;"
            print(line.rstrip(";"))


if __name__ == "__main__":
    main()
