"""The small config of what the worker writes, cut from the settings by the worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.settings import Settings


@dataclass(frozen=True)
class OutputConfig:
    result_topic: str
    dlq_topic: str
    progress_topic: str  # "": no progress events
    group_id: str  # names the worker pool in each record's ce_source
    max_record_bytes: int  # KAFKA_MAX_REQUEST_SIZE: a dead letter is cut to fit it
    priority_topic: str = ""  # PRIORITY_TOPIC: its requests are the priority lane's
    progress_interval_seconds: float = 0.25  # a request's progress events coalesce over this

    def lane(self, topic: str) -> str:
        """The lane a request record came in by, for metrics and logs."""
        return "priority" if self.priority_topic and topic == self.priority_topic else "regular"

    @classmethod
    def from_settings(cls, settings: Settings) -> OutputConfig:
        return cls(
            result_topic=settings.result_topic,
            dlq_topic=settings.dlq_topic,
            progress_topic=settings.progress_topic,
            group_id=settings.group_id,
            max_record_bytes=settings.kafka_max_request_size,
            priority_topic=settings.priority_topic,
            progress_interval_seconds=settings.progress_interval_seconds,
        )
