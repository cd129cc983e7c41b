"""Two lanes in one group member: PRIORITY_TOPIC's requests before REQUEST_TOPIC's.

The member subscribes to both topics. Each lane's partitions are paused on their own: the regular
ones while the worker has no room for more work (backpressure, as with one topic), the priority
ones only once enough priority work waits to fill every slot that frees. So a busy worker keeps
taking priority requests, and they start before any regular request not yet running
(scheduler.py); a running batch is never interrupted for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

Lane = Literal["priority", "regular"]
Records = list[ConsumerRecord[Any, Any]]


class Lanes:
    def __init__(self, request_topic: str, priority_topic: str = "") -> None:
        self.request_topic = request_topic
        self.priority_topic = priority_topic  # empty: no priority lane

    @property
    def topics(self) -> list[str]:
        """What the member subscribes to."""
        return [self.request_topic, *([self.priority_topic] if self.priority_topic else [])]

    def urgent(self, topic: str) -> bool:
        return bool(self.priority_topic) and topic == self.priority_topic

    def lane(self, topic: str) -> Lane:
        return "priority" if self.urgent(topic) else "regular"

    def split(self, records: Iterable[ConsumerRecord[Any, Any]]) -> tuple[Records, Records]:
        """(priority, regular), each in the order polled."""
        urgent: Records = []
        regular: Records = []
        for record in records:
            (urgent if self.urgent(record.topic) else regular).append(record)
        return urgent, regular

    def priority_partitions(self, partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
        return sorted(tp for tp in partitions if self.urgent(tp.topic))

    def gate(self, consumer: AIOKafkaConsumer, regular_open: bool, priority_open: bool) -> None:
        """Pause or resume each lane's assigned partitions (a partition already in the wanted
        state is left alone: pausing again would not drop anything, but resuming a paused one
        restarts its fetches)."""
        try:
            assigned, paused = consumer.assignment(), consumer.paused()
        except IllegalStateError:  # not subscribed (any more)
            return
        to_pause, to_resume = [], []
        for tp in assigned:
            wanted_open = priority_open if self.urgent(tp.topic) else regular_open
            if wanted_open and tp in paused:
                to_resume.append(tp)
            elif not wanted_open and tp not in paused:
                to_pause.append(tp)
        if to_pause:
            consumer.pause(*to_pause)
        if to_resume:
            consumer.resume(*to_resume)
