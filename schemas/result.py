"""The result event (contract v1) published to `generation.results`, keyed by request_id."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ErrorCode, ErrorInfo


class Status(StrEnum):
    COMPLETED = "completed"
    REJECTED = "rejected"  # invalid input; never retried
    TIMEOUT = "timeout"  # GENERATION_TIMEOUT_SECONDS elapsed
    FAILED = "failed"  # engine or storage error


class ImageRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_id: str = Field(description="Deterministic from request_id and image index.")
    url: str = Field(description="BASE_URL/<key>, or a presigned GET URL.")
    seed: int = Field(description="Generating this seed alone reproduces this image.")
    key: str = Field(description="Object key in the store.")
    width: int
    height: int


class Audit(BaseModel):
    model_config = ConfigDict(frozen=True)

    policy: str = Field(
        description="Negative prompt policy: 'standard' (safe default) or 'custom'."
    )
    duration_sec: str = Field(description="Wall time of the generation, seconds, as a string.")
    model: str
    note: str | None = Field(None, description="E.g. that the tiny test model draws noise.")


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(description="Null only on dead-letter records.")
    status: Status
    images: list[ImageRef] = Field(default_factory=list)
    audit: Audit | None = None
    error: ErrorInfo | None = None

    @classmethod
    def failure(
        cls, request_id: str, status: Status, error: ErrorInfo, audit: Audit | None = None
    ) -> GenerationResult:
        return cls(request_id=request_id, status=status, error=error, audit=audit)

    @classmethod
    def failed(cls, request_id: str, code: ErrorCode) -> GenerationResult:
        """A request that could not be completed, with the code's fixed public message."""
        status = Status.TIMEOUT if code is ErrorCode.TIMEOUT else Status.FAILED
        return cls(request_id=request_id, status=status, error=ErrorInfo.public(code))


def bounded(result: GenerationResult) -> GenerationResult:
    """Placeholder until the bounded-result rules land."""
    return result
