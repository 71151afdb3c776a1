"""The chart renders, lints and validates, and its pods get the settings the services read."""

from __future__ import annotations

from typing import Any

import helm_python
import kubernetes_validate
import pytest
from pydantic_settings import BaseSettings

from tests.chart import render
from tests.support.chart import (
    MONITORING,
    field_exists,
    load_values,
    named,
    of_kind,
    pod_env,
    service_container,
    settings_from,
)
from tunewire.core.base import settings as core_settings
from tunewire.evaluate import config as evaluate_config
from tunewire.ingest import config as ingest_config
from tunewire.label import config as label_config
from tunewire.serve import config as serve_config
from tunewire.train import config as train_config

SERVICES: dict[str, type[core_settings.ServiceSettings]] = {
    "ingest": ingest_config.IngestSettings,
    "label": label_config.LabelSettings,
    "train": train_config.TrainSettings,
    "evaluate": evaluate_config.EvaluateSettings,
    "serve": serve_config.ServeSettings,
}
#: The services that scale on CPU; the controllers (train, evaluate) run one replica.
CONSUMERS = ("ingest", "label")
#: Kinds without an OpenAPI schema in Kubernetes itself (custom resources).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("values_file", [None, "values-production.yaml"])
def test_lint_is_clean(values_file: str | None) -> None:
    values = load_values(values_file) if values_file else None
    report = helm_python.lint(
        render.CHART, values, strict=True, namespace="tunewire", kube_version="v1.31.0"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


def test_every_object_validates_against_kubernetes(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)


def test_default_values_render_the_objects_of_every_service(
    default_objects: list[dict[str, Any]],
) -> None:
    installed = {
        (o["kind"], o["metadata"]["name"]) for o in default_objects if not render.is_hook(o)
    }
    for service in SERVICES:
        name = f"tunewire-{service}"
        for kind in ("Deployment", "Service", "ServiceAccount", "ConfigMap", "NetworkPolicy"):
            assert (kind, name) in installed
        assert ("PodDisruptionBudget", name) in installed
    assert ("NetworkPolicy", "tunewire-default-deny") in installed
    for kind in ("ServiceAccount", "ConfigMap", "NetworkPolicy"):
        assert (kind, "tunewire-workloads") in installed
    for controller in ("train", "evaluate"):
        assert ("Role", f"tunewire-{controller}") in installed
        assert ("RoleBinding", f"tunewire-{controller}") in installed
    # Off by default: autoscaling, and ServiceMonitors (no Prometheus Operator API here).
    assert not of_kind(default_objects, "HorizontalPodAutoscaler")
    assert not of_kind(default_objects, "ServiceMonitor")


def test_production_values_scale_on_cpu(production_objects: list[dict[str, Any]]) -> None:
    for service in CONSUMERS:
        hpa = named(production_objects, "HorizontalPodAutoscaler", f"tunewire-{service}")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"tunewire-{service}"
        assert hpa["spec"]["minReplicas"] == 3
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # The HPA owns the replica count; a fixed one would fight it on every upgrade.
        assert (
            "replicas" not in named(production_objects, "Deployment", f"tunewire-{service}")["spec"]
        )
    # The controllers never scale: one replica, replaced by Recreate (never two at once).
    for controller in ("train", "evaluate"):
        deployment = named(production_objects, "Deployment", f"tunewire-{controller}")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # serve scales its pods (each with its vLLM) on CPU and on requests per pod.
    hpa = named(production_objects, "HorizontalPodAutoscaler", "tunewire-serve")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    cpu, per_pod = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert per_pod["pods"]["metric"]["name"] == "tunewire_serve_requests_per_second"
    assert "replicas" not in named(production_objects, "Deployment", "tunewire-serve")["spec"]
    hpas = {h["metadata"]["name"] for h in of_kind(production_objects, "HorizontalPodAutoscaler")}
    assert hpas == {"tunewire-ingest", "tunewire-label", "tunewire-serve"}


def _pod_env(objects: list[dict[str, Any]], service: str) -> dict[str, str]:
    """The environment a service's container starts with, its Secrets filled with fakes."""
    return pod_env(objects, f"tunewire-{service}")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_variable_is_one_the_service_reads(
    rendered: list[dict[str, Any]], service: str
) -> None:
    env = _pod_env(rendered, service)
    unknown = [
        name
        for name in env
        if name.startswith("TUNEWIRE_") and not field_exists(SERVICES[service], name)
    ]
    assert unknown == []
    assert {n for n in env if not n.startswith("TUNEWIRE_")} <= {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }


def _settings_from(
    env: dict[str, str], service: str, monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    return settings_from(env, SERVICES[service], monkeypatch)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_default_pod_settings_are_production_ready(
    default_objects: list[dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _settings_from(_pod_env(default_objects, service), service, monkeypatch)
    assert isinstance(built, core_settings.ServiceSettings)
    assert built.environment is core_settings.Environment.PRODUCTION
    assert [p.name for p in built.principals] == ["ops", "support-bot"]
    assert built.kafka.bootstrap_servers == "kafka-bootstrap.kafka.svc:9092"
    assert built.s3.bucket == "tunewire"
    assert built.s3.endpoint_url is None
    assert built.http.port == 8080
    if isinstance(built, label_config.LabelSettings):
        # Snapshot files go to the /tmp emptyDir: the root filesystem is read-only.
        assert built.label.workdir == "/tmp/tunewire"
    if isinstance(built, ingest_config.IngestSettings):
        assert built.ingest.prepare_workers == 1
    if isinstance(built, train_config.TrainSettings):
        limits = built.train
        assert (limits.max_running, limits.gpu_budget, limits.max_attempts) == (2, 0, 3)
    if isinstance(built, evaluate_config.EvaluateSettings):
        assert built.evaluate.max_attempts == 2
    if isinstance(built, serve_config.ServeSettings):
        serving = built.serve
        assert (serving.backend, serving.base_name, serving.max_adapters) == ("vllm", "base", 8)
        assert (serving.max_prompt_chars, serving.max_output_tokens) == (32000, 1024)
        assert serving.reconcile_every_s == 10
        assert built.vllm.base_url == "http://127.0.0.1:8000"
        assert built.vllm.api_key is None
    if isinstance(built, train_config.TrainSettings | evaluate_config.EvaluateSettings):
        launcher = built.launcher
        assert launcher.kind == "kubernetes"
        jobs = launcher.kubernetes
        assert jobs.namespace == "tunewire"
        assert jobs.image == "ghcr.io/tunewire/trainer:0.1.0"
        assert (jobs.service_account, jobs.config_map) == ("tunewire-workloads",) * 2
        assert jobs.secret is None
        assert jobs.gpu_resource == "nvidia.com/gpu"
        assert (jobs.node_selector, jobs.tolerations, jobs.priority_class) == ({}, [], None)
        assert (jobs.cpu_request, jobs.memory_request, jobs.memory_limit) == ("2", "16Gi", "32Gi")
        assert (jobs.active_deadline_seconds, jobs.backoff_limit) == (21600, 2)
        assert (jobs.ttl_seconds_after_finished, jobs.pending_timeout_s) == (86400, 1800.0)
        assert jobs.in_cluster


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_production_pod_settings_reach_sasl_kafka_and_s3(
    production_objects: list[dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _settings_from(_pod_env(production_objects, service), service, monkeypatch)
    assert isinstance(built, core_settings.ServiceSettings)
    assert built.kafka.security_protocol == "SASL_SSL"
    assert built.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert built.kafka.sasl_username == "tunewire"
    assert built.kafka.sasl_password is not None
    assert built.kafka.sasl_password.get_secret_value() == "kafka-password"
    assert built.kafka.ssl_cafile == "/etc/tunewire/kafka-ca/ca.crt"
    assert built.kafka.client_options()["bootstrap_servers"] == [
        "b-1.kafka.example.internal:9096",
        "b-2.kafka.example.internal:9096",
        "b-3.kafka.example.internal:9096",
    ]
    assert (built.s3.bucket, built.s3.region) == ("acme-tunewire-prod", "eu-west-1")
    # The CA file the settings name is the one the pod mounts from the Secret.
    deployment = named(production_objects, "Deployment", f"tunewire-{service}")
    mounts = service_container(deployment)["volumeMounts"]
    (mount,) = [m for m in mounts if m["name"] == "kafka-ca"]
    (volume,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-ca"
    ]
    assert built.kafka.ssl_cafile == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert volume["secret"]["secretName"] == "tunewire-kafka-ca"


def test_irsa_annotation_reaches_every_service_account(
    production_objects: list[dict[str, Any]],
) -> None:
    for account in of_kind(production_objects, "ServiceAccount"):
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        # The workloads' own annotation replaces the global one: a role of their own.
        workloads = account["metadata"]["name"] == "tunewire-workloads"
        expected = "tunewire-prod-workloads" if workloads else "tunewire-prod"
        assert role.endswith(f":role/{expected}")
    # No static credentials are wired when IRSA is used.
    for service in SERVICES:
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(
            _pod_env(production_objects, service)
        )


def test_static_s3_credentials_come_from_a_secret() -> None:
    values = {
        "global": {
            "s3": {
                "endpointUrl": "http://minio.storage.svc:9000",
                "credentials": {"existingSecret": "tunewire-s3"},
            }
        }
    }
    objects = render.objects(render.render(values))
    (container,) = named(objects, "Deployment", "tunewire-ingest")["spec"]["template"]["spec"][
        "containers"
    ]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "tunewire-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert refs["AWS_SECRET_ACCESS_KEY"]["name"] == "tunewire-s3"
    config = named(objects, "ConfigMap", "tunewire-ingest")["data"]
    assert config["TUNEWIRE_S3__ENDPOINT_URL"] == "http://minio.storage.svc:9000"


@pytest.mark.parametrize(
    ("enabled", "api_versions", "expected"),
    [
        (True, [MONITORING], len(SERVICES)),
        (True, [], 0),  # the API is absent: the install must not fail on an unknown kind
        (False, [MONITORING], 0),
    ],
)
def test_service_monitors_are_gated_on_the_operator_api(
    enabled: bool, api_versions: list[str], expected: int
) -> None:
    monitor = {"metrics": {"serviceMonitor": {"enabled": enabled}}}
    objects = render.objects(
        render.render(dict.fromkeys(SERVICES, monitor), api_versions=api_versions)
    )
    monitors = of_kind(objects, "ServiceMonitor")
    assert len(monitors) == expected
    for sm in monitors:
        (endpoint,) = sm["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
        service = named(objects, "Service", sm["metadata"]["name"])
        assert sm["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_production_service_monitors_carry_the_prometheus_label(
    production_objects: list[dict[str, Any]],
) -> None:
    monitors = of_kind(production_objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {f"tunewire-{s}" for s in SERVICES}
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors)


def _checksum(values: dict[str, Any] | None, service: str) -> str:
    deployment = named(render.objects(render.render(values)), "Deployment", f"tunewire-{service}")
    checksum: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    return checksum


def test_config_changes_roll_the_pods() -> None:
    before = _checksum(None, "ingest")
    assert _checksum(None, "ingest") == before
    changed = {"global": {"kafka": {"bootstrapServers": "kafka-0.other:9092"}}}
    assert _checksum(changed, "ingest") != before
    # A setting of label alone does not restart ingest.
    assert _checksum({"label": {"env": {"TUNEWIRE_LABEL__LEASE_SECONDS": 60}}}, "ingest") == before
    assert _checksum({"label": {"env": {"TUNEWIRE_LABEL__LEASE_SECONDS": 60}}}, "label") != (
        _checksum(None, "label")
    )


def test_long_release_names_are_truncated_to_63_characters() -> None:
    release = "r" * 53  # Helm's own limit on release names
    objects = render.objects(render.render(release=release))
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
        assert not obj["metadata"]["name"].endswith("-")
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())
        kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    assert len(set(names)) == len(names)  # still distinct
    assert sorted(n.rpartition("-")[2] for n in names) == sorted(SERVICES)


def test_helm_test_pods_check_each_service_readiness(
    default_objects: list[dict[str, Any]],
) -> None:
    pods = {o["metadata"]["name"]: o for o in of_kind(default_objects, "Pod")}
    assert set(pods) == {f"tunewire-test-{s}" for s in SERVICES}
    for service in SERVICES:
        pod = pods[f"tunewire-test-{service}"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["curl"]
        assert "--fail" in container["args"]
        assert container["args"][-1] == f"http://tunewire-{service}.tunewire.svc:8080/readyz"
    # A disabled service gets no test pod.
    objects = render.objects(render.render({"label": {"enabled": False}}))
    names = {o["metadata"]["name"] for o in of_kind(objects, "Pod")}
    assert names == {f"tunewire-test-{s}" for s in SERVICES if s != "label"}
    assert not [o for o in objects if o["metadata"]["name"] == "tunewire-label"]


def test_notes_name_the_services_and_what_is_missing() -> None:
    notes = render.render()["tunewire/templates/NOTES.txt"]
    for service in SERVICES:
        assert f"http://tunewire-{service}.tunewire.svc:8080" in notes
    assert "OpenAI API requests at http://tunewire-serve.tunewire.svc:8080/v1" in notes
    assert "docker.io/vllm/vllm-openai:v0.26.0 beside it with 1 nvidia.com/gpu" in notes
    assert "tunewire-principals" in notes
    assert "ghcr.io/tunewire/trainer:0.1.0" in notes
    production = render.render(load_values("values-production.yaml"))
    production_notes = production["tunewire/templates/NOTES.txt"]
    assert "tunewire-workloads (keys TUNEWIRE_KAFKA__SASL_USERNAME" in production_notes
    assert "tunewire-principals (key principals: a JSON list of principals" in production_notes
    assert "(from the claim tunewire-models, offline)" in production_notes


@pytest.mark.parametrize(
    "values",
    [
        {"global": {"networkPolicy": {"enabled": False}}},
        {"global": {"image": {"registry": ""}}, "ingest": {"image": {"tag": "0.1.1-rc.1"}}},
        {"ingest": {"serviceAccount": {"create": False, "name": "existing"}}},
        {
            "label": {
                "nodeSelector": {"pool": "control-plane"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "affinity": {"podAntiAffinity": {}},
                "podAnnotations": {"team": "ml"},
                "pdb": {"enabled": False},
                "env": {"TUNEWIRE_LABEL__LEASE_SECONDS": 600},
            }
        },
        {"global": {"environment": "development", "logLevel": "DEBUG"}},
    ],
    ids=["no-network-policy", "no-registry", "existing-account", "scheduling", "development"],
)
def test_other_values_render_valid_objects(values: dict[str, Any]) -> None:
    objects = render.objects(render.render(values))
    for obj in objects:
        kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
    images = {service_container(d)["image"] for d in of_kind(objects, "Deployment")}
    assert images
    if values.get("global", {}).get("networkPolicy") == {"enabled": False}:
        assert not of_kind(objects, "NetworkPolicy")
    if values.get("global", {}).get("image", {}).get("registry") == "":
        assert images == {"tunewire/control-plane:0.1.1-rc.1", "tunewire/control-plane:0.1.0"}
    if "serviceAccount" in values.get("ingest", {}):
        assert not [
            o for o in of_kind(objects, "ServiceAccount") if "ingest" in o["metadata"]["name"]
        ]
        pod = named(objects, "Deployment", "tunewire-ingest")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "existing"
