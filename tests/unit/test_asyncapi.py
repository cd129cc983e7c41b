"""The AsyncAPI document: valid against the official AsyncAPI 3.0.0 JSON Schema (vendored), and
every example valid against its message's schemas and against the contract's own parsers."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas import (
    Accepted,
    ErrorCode,
    GenerationResult,
    RequestLimits,
    Status,
    Undeliverable,
    parse_control,
    parse_progress,
    parse_request,
)
from schemas.__main__ import write_schemas
from schemas.asyncapi import TOPICS, asyncapi_document
from schemas.request import REQUEST_ID_PATTERN

VENDOR = Path(__file__).parents[2] / "schemas" / "vendor"
SPEC = VENDOR / "asyncapi-3.0.0.json"
# From schemas/vendor/README.md: what `npm pack @asyncapi/specs@6.11.1` contains.
SPEC_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"
LIMITS = RequestLimits(
    allowed_models=("stabilityai/sdxl-turbo",), allowed_loras=("watercolor-style",)
)


@pytest.fixture(scope="module")
def spec_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # Through JSON, as a reader of the written file sees it.
    return json.loads(json.dumps(asyncapi_document()))


def messages(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(document["components"]["messages"].items())


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    """A validator for `schema` whose #/components/... references resolve inside `document`."""
    return jsonschema.Draft7Validator({**schema, "components": document["components"]})


def test_the_vendored_schema_is_the_published_one() -> None:
    assert hashlib.sha256(SPEC.read_bytes()).hexdigest() == SPEC_SHA256
    assert SPEC_SHA256 in (VENDOR / "README.md").read_text(encoding="utf-8")


def test_the_document_is_valid_asyncapi_3(
    spec_validator: jsonschema.Draft7Validator, document: dict[str, Any]
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in spec_validator.iter_errors(document)]
    assert not errors, errors[:5]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["channels"]["requests"].update(address=5),
        lambda d: d["components"]["messages"]["GenerationRequest"].update(colour="red"),
        lambda d: d["channels"]["results"]["bindings"]["kafka"].update(bindingVersion="9.9.9"),
        lambda d: d["operations"]["sendResults"].update(action="publish"),  # AsyncAPI 2 wording
    ],
)
def test_the_validator_really_checks_deep_inside(
    spec_validator: jsonschema.Draft7Validator, document: dict[str, Any], damage: Any
) -> None:
    broken = copy.deepcopy(document)
    damage(broken)
    assert list(spec_validator.iter_errors(broken))


def test_every_topic_has_its_channel_and_operation(document: dict[str, Any]) -> None:
    addresses = {name: channel["address"] for name, channel in document["channels"].items()}
    assert addresses == {
        "requests": "generation.requests",
        "priorityRequests": "generation.requests.priority",
        "results": "generation.results",
        "progress": "generation.progress",
        "control": "generation.control",
        "deadLetters": "generation.requests.dlq",
    }
    assert set(TOPICS) == set(addresses)
    used = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in document["operations"].values()}
    assert used == set(addresses)


def test_records_are_keyed_by_request_id(document: dict[str, Any]) -> None:
    for name, message in messages(document):
        key = message["bindings"]["kafka"]["key"]
        assert key["type"] == "string"
        if name != "DeadLetter":  # a dead letter keeps whatever key it came with
            assert key["pattern"] == REQUEST_ID_PATTERN


def test_every_example_matches_its_message_schemas(document: dict[str, Any]) -> None:
    checked = 0
    for name, message in messages(document):
        payload = resolved(document, message["payload"])
        headers = resolved(document, message["headers"])
        assert message["examples"], f"{name} has no example"
        for example in message["examples"]:
            where = f"{name}/{example['name']}"
            assert not list(payload.iter_errors(example["payload"])), where
            assert not list(headers.iter_errors(example.get("headers", {}))), where
            checked += 1
    assert checked >= 9


def test_schemas_refuse_what_the_contract_refuses(document: dict[str, Any]) -> None:
    """The payload schemas are not vacuous: a few broken messages fail them."""
    by_name = dict(messages(document))
    request = resolved(document, by_name["GenerationRequest"]["payload"])
    assert list(request.iter_errors({"request_id": "r", "prompt": "p", "extra": 1}))
    assert list(request.iter_errors({"request_id": "r", "prompt": "p", "schema_version": "v2"}))
    assert list(
        request.iter_errors({"request_id": "r", "prompt": "p", "params": {"format": "gif"}})
    )
    progress = resolved(document, by_name["ProgressEvent"]["payload"])
    assert list(progress.iter_errors({"request_id": "r", "stage": "done", "ts": "x"}))
    control = resolved(document, by_name["ControlCommand"]["payload"])
    assert list(control.iter_errors({"type": "pause", "request_id": "r"}))
    dead = resolved(document, by_name["DeadLetter"]["headers"])
    assert list(dead.iter_errors({"dlq.source.topic": "t"}))  # the other dlq.* are required


def test_examples_are_what_the_contract_reads(document: dict[str, Any]) -> None:
    by_name = dict(messages(document))

    def payloads(name: str) -> list[Any]:
        return [example["payload"] for example in by_name[name]["examples"]]

    for payload in payloads("GenerationRequest"):
        assert isinstance(parse_request(json.dumps(payload).encode(), LIMITS), Accepted)
    for payload in payloads("GenerationResult"):
        GenerationResult.model_validate(payload)
    for payload in payloads("ProgressEvent"):
        assert parse_progress(json.dumps(payload).encode()) is not None
    for payload in payloads("ControlCommand"):
        assert parse_control(json.dumps(payload).encode()) is not None
    for payload in payloads("DeadLetter"):
        assert isinstance(parse_request(payload.encode(), LIMITS), Undeliverable)


def test_enums_list_every_status_and_code(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["Status"]["enum"]) == {s.value for s in Status}
    assert set(schemas["ErrorCode"]["enum"]) == {c.value for c in ErrorCode}
    assert {"expired", "cancelled"} <= set(schemas["Status"]["enum"])


def test_the_contract_page_s_v1_request_matches_the_request_json_schema(tmp_path: Path) -> None:
    paths = {path.name: path for path in write_schemas(tmp_path)}
    assert set(paths) == {
        "generation-request.v1.schema.json",
        "generation-result.v1.schema.json",
        "generation-progress.v1.schema.json",
        "generation-control.v1.schema.json",
        "asyncapi.json",
    }
    request_schema = json.loads(paths["generation-request.v1.schema.json"].read_text())
    contract = (Path(__file__).parents[2] / "docs" / "contract.md").read_text(encoding="utf-8")
    example = contract.split("\n## Request", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    jsonschema.validate(json.loads(example), request_schema)
    assert json.loads(paths["asyncapi.json"].read_text()) == asyncapi_document()


def test_the_cli_writes_the_asyncapi_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumer.__main__ import main

    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    assert main(["schemas", str(tmp_path / "out")]) == 0
    assert str(tmp_path / "out" / "asyncapi.json") in capsys.readouterr().out
