"""bounded(): whatever a result holds, what the worker publishes fits MAX_RESULT_BYTES."""

from __future__ import annotations

import pytest

from schemas import (
    MAX_RESULT_BYTES,
    MAX_VIOLATIONS,
    Audit,
    ErrorCode,
    ErrorInfo,
    GenerationResult,
    ImageRef,
    Status,
    Violation,
    ViolationCode,
    bounded,
)

VIOLATION = Violation(field="f" * 64, code=ViolationCode.UNKNOWN_FIELD, message="m" * 200)


def size(result: GenerationResult) -> int:
    return len(result.model_dump_json().encode("utf-8"))


def rejected(violations: list[Violation], audit: Audit | None = None) -> GenerationResult:
    # Built directly, not through ErrorInfo.from_violations: bounded() must not rely on its cap.
    error = ErrorInfo(code=ErrorCode.INVALID_REQUEST, message="x", violations=violations)
    return GenerationResult(request_id="r1", status=Status.REJECTED, error=error, audit=audit)


def image(index: int, url_chars: int = 2_000) -> ImageRef:
    url = "https://store.example/" + "q" * url_chars
    return ImageRef(
        image_id=f"im{index}", url=url, seed=index, key=f"r1/{index}.png", width=8, height=8
    )


def audit(model: str = "tiny-sdxl", note: str | None = None) -> Audit:
    return Audit(policy="standard", duration_sec="0.5", model=model, note=note)


def test_a_result_that_fits_is_returned_as_it_is() -> None:
    result = rejected([VIOLATION] * MAX_VIOLATIONS)
    assert bounded(result) is result
    completed = GenerationResult(
        request_id="r1", status=Status.COMPLETED, images=[image(i) for i in range(8)], audit=audit()
    )
    assert bounded(completed) is completed


def test_violations_go_first_and_are_counted() -> None:
    many = bounded(rejected([VIOLATION] * 5_000))
    assert many.error is not None and len(many.error.violations) == MAX_VIOLATIONS
    assert many.error.omitted_violations == 5_000 - MAX_VIOLATIONS
    # Violations alone push it over: some of them go, the audit stays as it was.
    long_model = audit(model="m" * 60_000)
    fewer = bounded(rejected([VIOLATION] * MAX_VIOLATIONS, long_model))
    assert fewer.error is not None and 0 < len(fewer.error.violations) < MAX_VIOLATIONS
    assert fewer.error.omitted_violations == MAX_VIOLATIONS - len(fewer.error.violations)
    assert fewer.audit == long_model and size(fewer) <= MAX_RESULT_BYTES


def test_then_the_texts_are_shortened_and_the_images_kept() -> None:
    images = [image(i) for i in range(4)]
    long = audit(model="m" * 100_000, note="n" * 100_000)
    result = GenerationResult(request_id="r1", status=Status.COMPLETED, images=images, audit=long)
    small = bounded(result)
    assert small.images == images and small.status is Status.COMPLETED and small.audit is not None
    assert small.audit.model.startswith("mmm") and len(small.audit.model) <= 200
    # A message built past the caps of the contract types (model_construct) is shortened too.
    huge = ErrorInfo.model_construct(code=ErrorCode.GENERATION_FAILED, message="e" * 200_000)
    failed = bounded(GenerationResult(request_id="r1", status=Status.FAILED, error=huge))
    assert failed.error is not None and failed.error.message.startswith("eee")


def test_a_result_that_cannot_shrink_becomes_the_minimal_one() -> None:
    images = [image(i) for i in range(1_000)]
    result = GenerationResult(request_id="r1", status=Status.COMPLETED, images=images)
    minimal = bounded(result)
    assert minimal.request_id == "r1" and minimal.status is Status.FAILED and not minimal.images
    assert minimal.error == ErrorInfo.public(ErrorCode.RESULT_REFUSED)
    # Its size has a small bound: the worst request_id (128 characters, each escaped to 6 bytes).
    worst = result.model_copy(update={"request_id": "\x00" * 128})
    assert size(bounded(worst)) < 1024


@pytest.mark.parametrize(
    "result",
    [
        rejected([VIOLATION] * 100_000),
        rejected([VIOLATION] * 100, audit("\ud800" * 100_000, "\udfff")),
        GenerationResult(request_id="r1", status=Status.FAILED, audit=audit("\ud800")),
        GenerationResult(request_id="\x00" * 100_000, status=Status.COMPLETED, images=[image(0)]),
        GenerationResult(
            request_id="\N{GRINNING FACE}" * 100_000,
            status=Status.COMPLETED,
            images=[image(i, 100_000) for i in range(50)],
            audit=audit("m" * 100_000, "n" * 100_000),
        ),
        GenerationResult(request_id=None, status=Status.FAILED, images=[image(0, 70_000)]),
    ],
)
def test_adversarial_results_always_fit_and_serialise(result: GenerationResult) -> None:
    assert size(bounded(result)) <= MAX_RESULT_BYTES  # encodes: no lone surrogate left
