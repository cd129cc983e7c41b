"""The configuration reference (docs/configuration.md), generated from the settings themselves.

`python -m consumer.devtools.config_reference > docs/configuration.md` rewrites it. The rows come
from `Settings.model_fields` (name, type, bounds, default, description), grouped under the section
comments of consumer/settings/, so a setting added there with its description is documented
without touching this file; tests/unit/test_config_reference.py fails when the page drifts.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ByteSize, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from consumer.settings import Settings
from consumer.settings.connection_fields import ConnectionFields
from consumer.settings.input_fields import InputFields
from consumer.settings.worker_fields import WorkerFields

UNSET = "—"
MIB = 1024 * 1024
# The section comments of the settings modules, as headings a reader understands ("seed
# variables" are the ones the project started with: sidecar, models, API keys, watchdog).
SECTION_TITLES = {
    "seed variables": "Sidecar, models and health",
    "engine": "Engine",
    "request limits": "Request limits",
    "image inputs and adapters": "Image inputs and LoRA adapters (1.2)",
    "kafka": "Kafka, batching and shutdown",
    "storage": "Storage",
    "logging": "Logging",
}
_SECTION = re.compile(r"^    # --- (?P<name>[^-]+?) -+$")
_FIELD = re.compile(r"^    (?P<name>[a-z_][a-z0-9_]*)\s*:")
_NAME = re.compile(r"\b[A-Z][A-Z0-9_]+\b")  # what a setting name looks like

INTRO = """\
# Configuration

<!-- Generated from consumer/settings/ by
     `python -m consumer.devtools.config_reference > docs/configuration.md`: edit the field
     descriptions there, not this page (tests/unit/test_config_reference.py checks they agree). -->

One settings object (`consumer.settings.Settings`), read from the environment and from `.env` (or
the file `--env-file` names) at startup. Lists are comma-separated, booleans `true` or `false`,
sizes in bytes. Unknown variables are ignored, so a misspelt name changes nothing: the
Kubernetes ConfigMap (`deploy/kubernetes/base/configmap.yaml`) is checked against this list by
`tests/unit/test_deploy_kubernetes.py`. Secrets (API keys, the SASL password, the AWS keys) have
no default and are never logged.

What the request limits mean for a request is in [contract.md](contract.md); how to size a pool
and tune the worker (with what was measured of `KAFKA_SESSION_TIMEOUT_MS` and
`KAFKA_FETCH_MAX_WAIT_MS`) in [operations.md](operations.md#tuning).
"""


# Where the fields are declared, in the order the reference lists them.
FIELD_CLASSES = (WorkerFields, InputFields, ConnectionFields)


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable a field is read from: its first alias choice, if it has any."""
    choices = getattr(field.validation_alias, "choices", None)
    return str(choices[0]) if choices else name.upper()


def sections() -> list[tuple[str, list[str]]]:
    """Field names in the order they are declared (consumer/settings/worker_fields.py, then
    connection_fields.py), under the section comment above them."""
    fields = Settings.model_fields
    grouped: list[tuple[str, list[str]]] = [("Settings", [])]
    lines = [line for part in FIELD_CLASSES for line in inspect.getsource(part).splitlines()]
    for line in lines:
        if section := _SECTION.match(line):
            name = section["name"].strip()
            grouped.append((SECTION_TITLES.get(name, name.capitalize()), []))
        elif (found := _FIELD.match(line)) and found["name"] in fields:
            grouped[-1][1].append(found["name"])
    listed = {name for _, names in grouped for name in names}
    grouped[-1][1].extend(name for name in fields if name not in listed)  # none, unless dynamic
    return [(title, names) for title, names in grouped if names]


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_text(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in get_args(annotation))
    if origin is list:
        return f"list of {_type_text(get_args(annotation)[0])}"
    if origin is dict:
        return "list of key=value"
    if annotation is ByteSize:
        return "bytes (`12GiB`, `16GB`)"
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    return str(getattr(annotation, "__name__", annotation))


def _bounds_text(field: FieldInfo) -> str:
    low = high = ""
    for rule in field.metadata:
        if isinstance(rule, Ge | Gt):
            low = f"≥ {rule.ge}" if isinstance(rule, Ge) else f"> {rule.gt}"
        elif isinstance(rule, Le | Lt):
            high = f"≤ {rule.le}" if isinstance(rule, Le) else f"< {rule.lt}"
    return ", ".join(part for part in (low, high) if part)


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(_value_text(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}={_value_text(item)}" for key, item in value.items())
    return str(value)


def _default_text(field: FieldInfo) -> str:
    if _is_secret(field.annotation):  # never a value, whatever a default might hold
        return UNSET
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    text = "" if value is None or value is PydanticUndefined else _value_text(value)
    if not text:
        return UNSET
    if isinstance(value, int) and not isinstance(value, bool) and value >= MIB and value % MIB == 0:
        return f"`{text}` ({value // MIB} MiB)"
    return f"`{text}`"


def _prose(text: str, names: frozenset[str]) -> str:
    """A description as Markdown: setting names as code, `<` and `>` escaped (GitHub would take
    `<key>` for an HTML tag and drop it) outside code spans."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # the even parts are outside code spans
        plain = parts[index].replace("<", "&lt;").replace(">", "&gt;")
        parts[index] = _NAME.sub(lambda m: f"`{m[0]}`" if m[0] in names else m[0], plain)
    return "`".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(names: list[str]) -> Iterator[str]:
    known = frozenset(env_name(name, field) for name, field in Settings.model_fields.items())
    for name in names:
        field = Settings.model_fields[name]
        kind = _type_text(field.annotation)
        if bounds := _bounds_text(field):
            kind = f"{kind}, {bounds}"
        cells = (
            f"`{env_name(name, field)}`",
            kind,
            _default_text(field),
            _prose(field.description or "", known),
        )
        yield "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def render() -> str:
    parts = [INTRO]
    for title, names in sections():
        parts.append(
            f"\n## {title}\n\n| variable | type | default | meaning |\n|---|---|---|---|\n"
        )
        parts.append("".join(f"{row}\n" for row in rows(names)))
    return "".join(parts)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
