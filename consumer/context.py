"""What the request-handling parts of a worker share once it is connected: one object, built
by the worker, handed to the triage (intake side) and the batch runner (engine side)."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.acks import Acknowledger
from consumer.attempts import AttemptLog
from consumer.metrics import WorkerMetrics
from consumer.processing import StopCheck
from consumer.progress import ProgressReporter
from consumer.settings import Settings


@dataclass(frozen=True)
class RequestContext:
    settings: Settings
    acks: Acknowledger  # publish outcomes, then commit
    metrics: WorkerMetrics
    attempts: AttemptLog  # the crash-loop guard and answers from the store
    stops: StopCheck  # cancelled or past their deadline
    progress: ProgressReporter
