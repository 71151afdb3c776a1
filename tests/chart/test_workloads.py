"""The trainer and evaluator Jobs: what the chart hands the launcher, and the Jobs the launcher
then builds from it, held to the same rules as the chart's own objects.

The chart never renders a Job: train and evaluate create them through the Kubernetes API from
their TUNEWIRE_LAUNCHER__* settings. So these tests build each controller's settings from its
rendered pod environment, exactly as the service does at start-up, and ask the real launcher
(core/launchers/kubejobs.py) for the Job it would create.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s

from tests.chart import render
from tests.support.chart import (
    field_exists,
    load_values,
    named,
    of_kind,
    pod_env,
    settings_from,
)
from tunewire.core.base import settings
from tunewire.core.launchers import kubejobs, launching
from tunewire.evaluate import config as evaluate_config
from tunewire.train import config as train_config
from tunewire.workloads import config as workload_config

CONTROLLERS: dict[
    launching.WorkloadKind,
    type[train_config.TrainSettings] | type[evaluate_config.EvaluateSettings],
] = {
    "train": train_config.TrainSettings,
    "evaluate": evaluate_config.EvaluateSettings,
}
#: What the workloads' Secret holds in the production-like values (keys are variable names).
WORKLOAD_SECRET = {
    "TUNEWIRE_KAFKA__SASL_USERNAME": "tunewire-workloads",
    "TUNEWIRE_KAFKA__SASL_PASSWORD": "kafka-password",
}


def _launcher_settings(
    objects: list[dict[str, Any]],
    kind: launching.WorkloadKind,
    monkeypatch: pytest.MonkeyPatch,
    *,
    fullname: str = "tunewire",
) -> launching.KubernetesLauncherSettings:
    """The launcher settings the controller's pod starts with (``fullname``: the release's
    name prefix)."""
    env = pod_env(objects, f"{fullname}-{kind}")
    built = settings_from(env, CONTROLLERS[kind], monkeypatch)
    assert built.launcher.kind == "kubernetes"
    return built.launcher.kubernetes


def _job(
    objects: list[dict[str, Any]],
    kind: launching.WorkloadKind,
    monkeypatch: pytest.MonkeyPatch,
    *,
    fullname: str = "tunewire",
) -> dict[str, Any]:
    """The Job the controller's launcher creates for a one-GPU workload, as the API gets it."""
    jobs = _launcher_settings(objects, kind, monkeypatch, fullname=fullname)
    spec = launching.WorkloadSpec(
        name=launching.workload_name(kind, "support-intent", "ds-1"),
        kind=kind,
        args=["--objective", "support-intent"],
        labels={"tunewire.io/objective": "support-intent"},
        gpus=1,
    )
    with k8s.ApiClient() as client:
        launcher = kubejobs.KubernetesLauncher(jobs, kind=kind, api_client=client)
        manifest: dict[str, Any] = client.sanitize_for_serialization(launcher.manifest(spec))
    return manifest


def _selecting(objects: list[dict[str, Any]], job: dict[str, Any]) -> set[str]:
    """The NetworkPolicies that select the Job's pods."""
    labels = job["spec"]["template"]["metadata"]["labels"]
    return {p["metadata"]["name"] for p in of_kind(objects, "NetworkPolicy") if _selects(p, labels)}


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy's pod selector matches pods with ``labels``."""
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_the_launched_jobs_validate_and_follow_the_policies(
    rendered: list[dict[str, Any]], kind: launching.WorkloadKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(rendered, kind, monkeypatch)
    kubernetes_validate.validate(job, render.KUBE_VERSION, strict=True)
    assert job["metadata"]["namespace"] == "tunewire"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # Restricted, no API token, requests and a memory limit, a pinned image.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["runAsUser"] == 10001 and ctx["capabilities"] == {"drop": ["ALL"]}
    resources = container["resources"]
    assert {"cpu", "memory", "nvidia.com/gpu"} <= set(resources["requests"])
    assert {"memory", "nvidia.com/gpu"} <= set(resources["limits"])
    image: str = container["image"]
    assert image.endswith(":0.1.0") and "/tunewire" in image
    # Everything the Job names is an object of this release.
    account = pod["serviceAccountName"]
    assert account == "tunewire-workloads"
    assert named(rendered, "ServiceAccount", account)["automountServiceAccountToken"] is False
    (config_map,) = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    named(rendered, "ConfigMap", config_map)
    # Its pods carry the release's labels: the release's default-deny isolates them, and of
    # the policies that allow anything, the workloads' alone selects them.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "tunewire"
    assert labels["app.kubernetes.io/name"] == "tunewire"
    assert _selecting(rendered, job) == {"tunewire-default-deny", "tunewire-workloads"}
    deny = named(rendered, "NetworkPolicy", "tunewire-default-deny")["spec"]
    assert "ingress" not in deny and "egress" not in deny


def test_production_jobs_run_on_the_gpu_pool_with_the_workloads_secret(
    production_objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(production_objects, "train", monkeypatch)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/platform/tunewire-trainer:0.1.0"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g6e.2xlarge"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "tunewire-training"
    assert container["resources"]["requests"] == {
        "cpu": "6",
        "memory": "48Gi",
        "nvidia.com/gpu": "1",
    }
    assert container["resources"]["limits"] == {"memory": "60Gi", "nvidia.com/gpu": "1"}
    # The credentials Secret is named, never read: no value of it is in the Job.
    assert {"secretRef": {"name": "tunewire-workloads"}} in container["envFrom"]
    assert not [e for e in container.get("env", []) if "valueFrom" in e]
    jobs = _launcher_settings(production_objects, "train", monkeypatch)
    assert jobs.pending_timeout_s == 2700


@pytest.mark.parametrize("values_file", [None, "values-production.yaml"])
def test_the_workload_settings_are_ones_the_workloads_read(
    values_file: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = load_values(values_file) if values_file else None
    objects = render.objects(render.render(values))
    data: dict[str, str] = named(objects, "ConfigMap", "tunewire-workloads")["data"]
    trainer = workload_config.TrainerSettings
    assert [name for name in data if not field_exists(trainer, name)] == []
    # No CA file path: the launcher names it, beside the mount it adds to each Job.
    assert "TUNEWIRE_KAFKA__SSL_CAFILE" not in data
    env = {**data, **(WORKLOAD_SECRET if values_file else {})}
    built = settings_from(env, trainer, monkeypatch)
    evaluator = settings_from(env, settings.WorkloadSettings, monkeypatch)
    assert built.kafka == evaluator.kafka and built.s3 == evaluator.s3
    assert built.environment is settings.Environment.PRODUCTION
    if values_file is None:
        assert built.kafka.bootstrap_servers == "kafka-bootstrap.kafka.svc:9092"
        assert (built.s3.bucket, built.s3.endpoint_url) == ("tunewire", None)
        return
    assert built.kafka.security_protocol == "SASL_SSL"
    assert built.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert built.kafka.sasl_username == "tunewire-workloads"
    assert (built.s3.bucket, built.s3.region) == ("acme-tunewire-prod", "eu-west-1")
    assert built.trainer.checkpoint_every_s == 120


@pytest.mark.parametrize(
    ("tls", "key"),
    [
        (None, None),  # the production-like values: caKey ca.crt
        ({"caSecret": "corp-ca", "caKey": "bundle.pem"}, "bundle.pem"),
    ],
)
def test_the_jobs_mount_the_kafka_ca_the_services_use(
    production_values: dict[str, Any],
    tls: dict[str, str] | None,
    key: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = copy.deepcopy(production_values)
    if tls is not None:
        values["global"]["kafka"]["tls"] = tls
    tls = values["global"]["kafka"]["tls"]
    objects = render.objects(render.render(values))
    for kind in CONTROLLERS:
        job = _job(objects, kind, monkeypatch)
        kubernetes_validate.validate(job, render.KUBE_VERSION, strict=True)
        pod = job["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == tls["caSecret"]
        (item,) = volume["secret"]["items"]
        assert item["key"] == (key or "ca.crt")
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        # The trainer's Kafka settings, from its ConfigMap, its Secret and the Job's own
        # environment, name the mounted file.
        (config_map,) = [
            s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s
        ]
        env = {
            **named(objects, "ConfigMap", config_map)["data"],
            **WORKLOAD_SECRET,
            **{var["name"]: var["value"] for var in container["env"]},
        }
        built = settings_from(env, workload_config.TrainerSettings, monkeypatch)
        assert built.kafka.ssl_cafile == f"{mount['mountPath']}/{item['path']}"
        assert built.kafka.security_protocol == "SASL_SSL"


def test_without_a_private_kafka_ca_the_jobs_mount_none(
    default_objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in CONTROLLERS:
        job = _job(default_objects, kind, monkeypatch)
        pod = job["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if "secret" in v]
        (container,) = pod["containers"]
        assert "TUNEWIRE_KAFKA__SSL_CAFILE" not in {var["name"] for var in container["env"]}


def test_two_releases_in_one_namespace_keep_to_their_own_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    releases = {
        name: render.objects(render.render(values, release=name))
        for name, values in (("blue", None), ("green", {"nameOverride": "tw"}))
    }
    both = [o for objects in releases.values() for o in objects]
    for name, fullname in (("blue", "blue-tunewire"), ("green", "green-tw")):
        objects = releases[name]
        jobs = _launcher_settings(objects, "train", monkeypatch, fullname=fullname)
        job = _job(objects, "train", monkeypatch, fullname=fullname)
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == name
        # Of both releases' policies, only this one's select its Jobs, a nameOverride included.
        assert _selecting(both, job) == {f"{fullname}-default-deny", f"{fullname}-workloads"}
        # Its launcher follows only the Jobs with the release's labels.
        assert jobs.labels == {
            "app.kubernetes.io/name": "tunewire" if name == "blue" else "tw",
            "app.kubernetes.io/instance": name,
        }


def test_workload_values_reach_the_launcher_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    values: dict[str, Any] = {
        "global": {"image": {"registry": ""}},
        "workloads": {
            "image": {"registry": "gpu.example.com", "tag": "0.2.0-cuda12", "pullPolicy": "Always"},
            "gpu": {"resource": "amd.com/gpu"},
            "nodeSelector": {"pool": "mi300", "topology.kubernetes.io/zone": "eu-west-1a"},
            "tolerations": [
                {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
            ],
            "priorityClassName": "batch-low",
            # Large numbers must not reach the services as 1e+06.
            "activeDeadlineSeconds": 1000000,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 0,
            "pendingTimeoutSeconds": 90.5,
            "resources": {
                "requests": {"cpu": "500m", "memory": "2Gi"},
                "limits": {"memory": "3Gi"},
            },
            "serviceAccount": {"create": False, "name": "ml-jobs"},
            "credentials": {"existingSecret": "ml-jobs-env"},
        },
    }
    objects = render.objects(render.render(values))
    for kind in CONTROLLERS:
        jobs = _launcher_settings(objects, kind, monkeypatch)
        assert jobs.image == "gpu.example.com/tunewire/trainer:0.2.0-cuda12"
        assert jobs.image_pull_policy == "Always"
        assert jobs.gpu_resource == "amd.com/gpu"
        assert jobs.node_selector == values["workloads"]["nodeSelector"]
        assert [t.model_dump(exclude_none=True) for t in jobs.tolerations] == values["workloads"][
            "tolerations"
        ]
        assert jobs.priority_class == "batch-low"
        assert (jobs.active_deadline_seconds, jobs.backoff_limit) == (1000000, 0)
        assert (jobs.ttl_seconds_after_finished, jobs.pending_timeout_s) == (0, 90.5)
        assert (jobs.cpu_request, jobs.memory_request, jobs.memory_limit) == ("500m", "2Gi", "3Gi")
        assert (jobs.service_account, jobs.secret) == ("ml-jobs", "ml-jobs-env")
    # An existing account is used, not created.
    components = {
        a["metadata"]["labels"]["app.kubernetes.io/component"]
        for a in of_kind(objects, "ServiceAccount")
    }
    assert components == {"ingest", "label", "train", "evaluate", "serve"}


def test_rbac_and_workload_objects_follow_the_switches() -> None:
    no_train_rbac = render.objects(render.render({"train": {"rbac": {"create": False}}}))
    assert {r["metadata"]["name"] for r in of_kind(no_train_rbac, "Role")} == {"tunewire-evaluate"}
    assert {b["metadata"]["name"] for b in of_kind(no_train_rbac, "RoleBinding")} == {
        "tunewire-evaluate"
    }
    pod = named(no_train_rbac, "Deployment", "tunewire-train")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # no Role, no token

    only_evaluate = render.objects(render.render({"train": {"enabled": False}}))
    assert {r["metadata"]["name"] for r in of_kind(only_evaluate, "Role")} == {"tunewire-evaluate"}
    named(only_evaluate, "ConfigMap", "tunewire-workloads")  # evaluate still launches Jobs

    neither = render.objects(
        render.render({"train": {"enabled": False}, "evaluate": {"enabled": False}})
    )
    assert not [o for o in neither if o["kind"] in {"Role", "RoleBinding"}]
    assert not [o for o in neither if o["metadata"]["name"] == "tunewire-workloads"]


def test_an_existing_controller_account_gets_the_role() -> None:
    values = {"train": {"serviceAccount": {"create": False, "name": "ml-train"}}}
    objects = render.objects(render.render(values))
    (subject,) = named(objects, "RoleBinding", "tunewire-train")["subjects"]
    assert subject["name"] == "ml-train"
    pod = named(objects, "Deployment", "tunewire-train")["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("ml-train", True)
    assert "tunewire-train" not in {
        a["metadata"]["name"] for a in of_kind(objects, "ServiceAccount")
    }


def _checksums(values: dict[str, Any] | None) -> dict[str, str]:
    objects = render.objects(render.render(values))
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in of_kind(objects, "Deployment")
    }


def test_workload_changes_roll_only_the_controllers() -> None:
    before = _checksums(None)
    after = _checksums({"workloads": {"image": {"tag": "0.1.1"}}})
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"tunewire-train", "tunewire-evaluate"}
    limits = _checksums({"train": {"limits": {"maxRunning": 5}}})
    assert {name for name in before if before[name] != limits[name]} == {"tunewire-train"}


def test_the_install_guide_covers_gpu_nodes_and_every_workload_setting() -> None:
    guide = (render.ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    assert "GPU nodes" in guide and "NVIDIA device plugin" in guide
    assert "images/trainer/Dockerfile" in guide
    defaults = yaml.safe_load((render.CHART / "values.yaml").read_text(encoding="utf-8"))
    missing = [key for key in defaults["workloads"] if f"workloads.{key}" not in guide]
    assert missing == []
    assert "train.limits.gpuBudget" in guide
