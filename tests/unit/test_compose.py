"""Static checks of docker-compose.yml, the Dockerfile and deploy/prometheus.yml.

No Docker engine is needed: the files are parsed and compared with `consumer.settings.Settings`, and
the compose file is validated against the official Compose JSON schema that check-jsonschema ships.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from pydantic import AliasChoices

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus.yml"

INIT_SERVICES = ("init-topics", "init-bucket")
REQUIRED_WORKER_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS",
    "S3_ENDPOINT_URL",
    "S3_BUCKET",
    "DEFAULT_MODEL",
    "APP_PORT",
}
# Values for the variables the compose file requires (`${VAR:?...}`) when it is interpolated here.
REQUIRED_COMPOSE_VARS = {"API_KEY": "test-key-0123456789"}
# The one variable of the worker that is not a setting: the home directory, moved to the tmpfs
# because the root filesystem is read-only.
NON_SETTINGS_ENV = {"HOME"}
# Services whose image runs as root (MinIO's): they keep Docker's default capabilities; every other
# service drops them all.
ROOT_IMAGE_SERVICES = {"minio", "init-bucket"}


def settings_env_names() -> set[str]:
    """The environment variable names Settings reads: the upper-cased field name, or, for a field
    with a validation alias, the alias names (pydantic-settings then reads those instead)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(name.upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
    return names


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR:+alt}` and
    `$$`, enough to resolve this file's values the way `docker compose config` would."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        unset_or_empty = not value if operator and operator.startswith(":") else value is None
        if operator in (":-", "-"):
            return argument if unset_or_empty else str(value)
        if operator in (":?", "?"):
            if unset_or_empty:
                raise KeyError(f"{name} is required: {argument}")
            return str(value)
        if operator in (":+", "+"):
            return "" if unset_or_empty else argument
        return value or ""

    return _VARIABLE.sub(replace, value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            for pair in arguments.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def worker_env(services: dict[str, Any]) -> dict[str, str]:
    env = services["worker"]["environment"]
    assert isinstance(env, dict), "keep the worker's environment a mapping (NAME: value)"
    return {str(key): str(value) for key, value in env.items()}


def test_services_exist(services: dict[str, Any]) -> None:
    expected = {"kafka", "minio", "worker", "prometheus", *INIT_SERVICES}
    assert expected <= services.keys()


def test_kafka_runs_kraft_without_zookeeper(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any(key.startswith("KAFKA_ZOOKEEPER") for key in env)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name, service in services.items():
        assert "zookeeper" not in name.lower()
        assert "zookeeper" not in str(service.get("image", "")).lower()


def test_worker_environment_names_are_settings(worker_env: dict[str, str]) -> None:
    known = settings_env_names()
    assert {"APP_PORT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_HUB_OFFLINE"} <= known
    unknown = sorted(set(worker_env) - known - NON_SETTINGS_ENV)
    assert not unknown, f"not Settings fields (typo?): {unknown}"


def test_worker_environment_covers_the_essentials(worker_env: dict[str, str]) -> None:
    missing = REQUIRED_WORKER_ENV - worker_env.keys()
    assert not missing, f"worker environment lacks {sorted(missing)}"


def test_worker_environment_builds_valid_settings(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values, interpolated with their defaults, parse into Settings (types, validators)."""
    for key, value in worker_env.items():
        monkeypatch.setenv(key, interpolate(value, REQUIRED_COMPOSE_VARS))
    settings = Settings(_env_file=None)
    assert settings.app_host == "0.0.0.0"
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.require_api_key
    assert settings.valid_api_keys() == ["test-key-0123456789"]
    assert str(settings.data_dir) == "/data"


def test_api_key_has_no_default(worker_env: dict[str, str]) -> None:
    with pytest.raises(KeyError, match="API_KEY"):
        interpolate(worker_env["API_KEY"], {})


def test_worker_waits_for_init_services(services: dict[str, Any]) -> None:
    depends_on = services["worker"]["depends_on"]
    for name in INIT_SERVICES:
        assert depends_on[name]["condition"] == "service_completed_successfully"
    assert services["init-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["init-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("kafka", "minio", "worker"):
        assert "healthcheck" in services[name], name


def test_init_services_create_what_the_worker_uses(
    services: dict[str, Any], worker_env: dict[str, str]
) -> None:
    topics_env = services["init-topics"]["environment"]
    for key in ("REQUEST_TOPIC", "PRIORITY_TOPIC", "RESULT_TOPIC", "DLQ_TOPIC"):
        assert topics_env[key] == worker_env[key], key
    assert services["init-bucket"]["environment"]["S3_BUCKET"] == worker_env["S3_BUCKET"]


def test_worker_reserves_a_gpu(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def _mount_targets(service: dict[str, Any]) -> set[str]:
    """Where the service's volumes and tmpfs mounts land in the container (short syntax)."""
    targets = {entry.split(":")[1] for entry in service.get("volumes", [])}
    return targets | {entry.split(":")[0] for entry in service.get("tmpfs", [])}


def test_the_worker_runs_read_only_without_privileges(
    services: dict[str, Any], worker_env: dict[str, str]
) -> None:
    worker = services["worker"]
    assert worker["read_only"] is True
    assert worker["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in worker["security_opt"]
    tmpfs = {entry.split(":")[0]: entry.partition(":")[2].split(",") for entry in worker["tmpfs"]}
    # writable by uid 10001, and executable: torch.compile loads the kernels it builds from /tmp
    assert {"exec", "mode=1777"} <= set(tmpfs["/tmp"])
    # Everything the worker writes lies on a volume or a tmpfs: DATA_DIR, HF_HOME (the image's),
    # HOME (libraries' caches).
    writable = _mount_targets(worker)
    for path in (worker_env["DATA_DIR"], dockerfile_env()["HF_HOME"], worker_env["HOME"]):
        assert any(path == m or path.startswith(m + "/") for m in writable), path


def test_every_service_runs_without_new_privileges(services: dict[str, Any]) -> None:
    assert services.keys() > ROOT_IMAGE_SERVICES
    for name, service in services.items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        if name not in ROOT_IMAGE_SERVICES:
            assert service.get("cap_drop") == ["ALL"], name


def test_published_ports_bind_to_localhost(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)


def test_prometheus_scrapes_the_worker_port(
    services: dict[str, Any], worker_env: dict[str, str]
) -> None:
    prometheus = services["prometheus"]
    assert "monitoring" in prometheus.get("profiles", [])
    mounts = [str(v).split(":")[0] for v in prometheus.get("volumes", [])]
    assert "./deploy/prometheus.yml" in mounts
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    ports: list[int] = []
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            if "worker" in sd["names"]:
                ports.append(int(sd["port"]))
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                if host == "worker":
                    ports.append(int(port))
    assert ports, "no scrape job targets the worker"
    assert set(ports) == {int(worker_env["APP_PORT"])}


def test_dockerfile_runs_the_worker(worker_env: dict[str, str]) -> None:
    instructions = dockerfile_instructions()
    commands = [json.loads(arguments) for keyword, arguments in instructions if keyword == "CMD"]
    assert commands, "no CMD"
    assert commands[-1][:3] == ["python", "-m", "consumer"]
    assert commands[-1][3:] == ["run"]
    env = dockerfile_env()
    assert env["APP_HOST"] == "0.0.0.0"
    assert env["DATA_DIR"] == "/data"
    exposed = [arguments for keyword, arguments in instructions if keyword == "EXPOSE"]
    assert exposed == [worker_env["APP_PORT"]] == [env["APP_PORT"]]
    assert any(keyword == "USER" and arguments != "root" for keyword, arguments in instructions)
    healthchecks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
    assert healthchecks and "/health" in healthchecks[0]


def test_dockerfile_torch_is_within_the_project_range() -> None:
    args = dict(
        arguments.partition("=")[::2]
        for keyword, arguments in dockerfile_instructions()
        if keyword == "ARG"
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch = next(
        Requirement(dep)
        for dep in pyproject["project"]["dependencies"]
        if Requirement(dep).name == "torch"
    )
    assert torch.specifier.contains(args["TORCH_VERSION"]), (args["TORCH_VERSION"], torch)
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/")


def test_dockerignore_keeps_local_state_out() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "data", ".git", ".env", "*.png"} <= entries


def _check_jsonschema_command() -> list[str] | None:
    sibling = Path(sys.executable).with_name("check-jsonschema")
    if sibling.exists():
        return [str(sibling)]
    if importlib.util.find_spec("check_jsonschema") is not None:
        return [sys.executable, "-m", "check_jsonschema"]
    return None


def test_compose_file_matches_the_compose_spec() -> None:
    """Offline: check-jsonschema ships the official Compose schema (vendor.compose-spec)."""
    command = _check_jsonschema_command()
    if command is None:
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema)")
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
