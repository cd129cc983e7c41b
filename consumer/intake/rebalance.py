"""Rebalance hooks: hand revoked partitions over cleanly."""

from __future__ import annotations

import logging
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

log = logging.getLogger(__name__)


class Rebalanced(Protocol):
    """What a rebalance tells the member that owns the partitions (the worker)."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_assigned(
        self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]
    ) -> None: ...


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Rebalanced, consumer: AIOKafkaConsumer) -> None:
        self._worker = worker
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("partitions revoked", extra={"partitions": sorted(map(str, revoked))})
            await self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(map(str, assigned))})
        await self._worker.on_assigned(self._consumer, set(assigned))
