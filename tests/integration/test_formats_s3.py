"""Contract 1.1 output formats on a real S3 server (embedded SeaweedFS, or S3_ENDPOINT_URL)."""

from __future__ import annotations

import json
import secrets
import urllib.request

import pytest
from PIL import Image

from consumer.generation.engine import JobOutput, plan_job
from consumer.output.images import encode_output, image_parameters, store_output, stored_result
from schemas import Accepted, RequestLimits, parse_request
from storage import S3ImageStore, read_image_parameters
from tests.fixtures.services import S3Endpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LIMITS = RequestLimits(allowed_models=("tiny-sdxl",), default_model="tiny-sdxl")


@pytest.mark.parametrize(("image_format", "ext"), [("webp", "webp"), ("jpeg", "jpg")])
def test_a_lossy_request_is_served_in_its_format_with_its_parameters(
    s3_endpoint: S3Endpoint, image_format: str, ext: str
) -> None:
    e = s3_endpoint
    store = S3ImageStore(
        e.bucket,
        endpoint_url=e.endpoint_url,
        region=e.region,
        access_key_id=e.access_key_id,
        secret_access_key=e.secret_access_key,
    )
    store.ensure_bucket()
    request_id = f"fmt-{secrets.token_hex(4)}"
    body = {
        "request_id": request_id,
        "prompt": "a lighthouse at dusk",
        "schema_version": "1.1",
        "params": {"width": 64, "height": 64, "format": image_format, "quality": 80},
    }
    outcome = parse_request(json.dumps(body).encode(), LIMITS)
    assert isinstance(outcome, Accepted)
    job = plan_job(outcome.request, "blurry")
    picture = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    output = JobOutput(job, [picture], 0.1)

    result = store_output(output, encode_output(output), store, "formats")

    [image] = result.images
    assert image.key == f"formats/{request_id}/0.{ext}"
    assert image.content_type == f"image/{image_format}"
    with urllib.request.urlopen(image.url, timeout=10) as response:  # presigned GET
        assert response.headers["Content-Type"] == f"image/{image_format}"
        data = response.read()
    assert len(data) == image.bytes
    parameters = read_image_parameters(data)
    assert parameters == image_parameters(job, 0)
    assert (parameters["format"], parameters["quality"], parameters["prompt"]) == (
        image_format,
        80,
        "a lighthouse at dusk",
    )
    # A redelivery is answered from the store, with the size read from the object's metadata.
    served = stored_result(job, store, "formats")
    assert served is not None
    assert [(i.key, i.content_type, i.bytes) for i in served.images] == [
        (image.key, image.content_type, image.bytes)
    ]
