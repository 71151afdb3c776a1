"""serve's pod: the serve container and vLLM beside it, wired so that each reaches the other
exactly as the serve settings say, with GPUs, secrets and network only where they belong.

serve builds its settings from the pod's environment (ServeSettings), so these tests build
them from the rendered pod the same way and hold vLLM's command line to them: the address
serve calls is the one vLLM listens on, the base name is vLLM's served model name, the
adapters serve writes are where vLLM reads them, and serve keeps no more adapters loaded
than vLLM caches.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib import parse

import kubernetes_validate
import pytest

from tests.chart import render
from tests.support.chart import (
    SECRET_VALUES,
    load_values,
    named,
    of_kind,
    pod_env,
    service_container,
    settings_from,
)
from tunewire.serve import config as serve_config

SERVE = "tunewire-serve"


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = named(objects, "Deployment", SERVE)["spec"]["template"]["spec"]
    return spec


def _vllm(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(objects)["containers"]
    (container,) = [c for c in containers if c["name"] == "vllm"]
    return container


def _option(container: dict[str, Any], flag: str) -> str:
    """The value after ``flag`` on vLLM's command line (once, not overridden)."""
    args: list[str] = container["args"]
    assert args.count(flag) == 1, flag
    return args[args.index(flag) + 1]


def _settings(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> serve_config.ServeSettings:
    return settings_from(pod_env(objects, SERVE), serve_config.ServeSettings, monkeypatch)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_pod_runs_serve_and_vllm_with_the_adapters_at_one_path(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = _pod(rendered)
    assert [c["name"] for c in pod["containers"]] == ["serve", "vllm"]
    serve = service_container(named(rendered, "Deployment", SERVE))
    assert serve["args"] == ["serve"]  # `tunewire serve`: python -m tunewire.serve
    settings = _settings(rendered, monkeypatch)
    adapters_dir = settings.serve.adapters_dir
    mounts = {
        c["name"]: {m["name"]: m for m in c["volumeMounts"]}["adapters"] for c in pod["containers"]
    }
    assert {m["mountPath"] for m in mounts.values()} == {adapters_dir}
    # serve writes the files, vLLM only reads them.
    assert not mounts["serve"].get("readOnly") and mounts["vllm"]["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "adapters"]
    assert volume["emptyDir"]["sizeLimit"]


def test_serve_calls_vllm_where_vllm_listens_with_its_names_and_capacity(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(rendered, monkeypatch)
    vllm = _vllm(rendered)
    assert settings.serve.backend == "vllm"
    url = parse.urlsplit(settings.vllm.base_url)
    # Loopback only: nothing outside the pod reaches vLLM, not even the other serve pods.
    assert (url.hostname, url.port) == (_option(vllm, "--host"), int(_option(vllm, "--port")))
    assert url.hostname == "127.0.0.1"
    assert "ports" not in vllm
    assert vllm["command"] == ["vllm", "serve"]
    assert settings.serve.base_name == _option(vllm, "--served-model-name")
    assert "--enable-lora" in vllm["args"]
    assert _env(vllm)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # serve never keeps more adapters than vLLM caches, or vLLM would evict behind its back.
    assert settings.serve.max_adapters == int(_option(vllm, "--max-cpu-loras"))
    assert int(_option(vllm, "--max-cpu-loras")) >= int(_option(vllm, "--max-loras"))
    gpus = vllm["resources"]["limits"]["nvidia.com/gpu"]
    assert _option(vllm, "--tensor-parallel-size") == gpus
    # One consumer group per pod (its hostname), so every pod hears every approval.
    assert "TUNEWIRE_CONSUMER_GROUP" not in pod_env(rendered, SERVE)
    assert settings.consumer_group == f"tunewire-serve-{socket.gethostname()}"


def test_default_vllm_serves_the_values_model_from_the_hub(
    default_objects: list[dict[str, Any]],
) -> None:
    vllm = _vllm(default_objects)
    assert vllm["image"] == "docker.io/vllm/vllm-openai:v0.26.0"
    # The model first and positional: `vllm serve --model` is deprecated.
    assert vllm["args"][0] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "--model" not in vllm["args"]
    assert (_option(vllm, "--max-loras"), _option(vllm, "--max-lora-rank")) == ("4", "16")
    env = _env(vllm)
    assert "HF_HUB_OFFLINE" not in env
    assert env["HF_HOME"].startswith("/models/")
    assert {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}.items() <= env.items()
    models = {v["name"]: v for v in _pod(default_objects)["volumes"]}["models"]
    assert models["emptyDir"]["sizeLimit"] == "20Gi"
    hub = named(default_objects, "NetworkPolicy", SERVE)["spec"]["egress"][3]
    assert hub == {"ports": [{"port": 443, "protocol": "TCP"}]}


def test_production_vllm_reads_its_model_offline_from_a_claim(
    production_objects: list[dict[str, Any]],
) -> None:
    vllm = _vllm(production_objects)
    assert vllm["image"] == "registry.example.com/mirror/vllm-openai:v0.26.0"
    assert vllm["args"][0] == "/models/qwen2.5-7b-instruct"
    assert vllm["args"][-4:] == ["--max-model-len", "8192", "--gpu-memory-utilization", "0.9"]
    assert _option(vllm, "--tensor-parallel-size") == "2"
    env = _env(vllm)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_LOGGING_LEVEL"] == "INFO"
    models = {v["name"]: v for v in _pod(production_objects)["volumes"]}["models"]
    assert models == {"name": "models", "persistentVolumeClaim": {"claimName": "tunewire-models"}}
    (mount,) = [m for m in vllm["volumeMounts"] if m["name"] == "models"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/models", True)
    # No hub: beyond DNS, Kafka and S3 the pods reach nothing.
    policy = named(production_objects, "NetworkPolicy", SERVE)["spec"]
    assert len(policy["egress"]) == 3
    pod = _pod(production_objects)
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g6e.12xlarge"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "tunewire-serving"
    strategy = named(production_objects, "Deployment", SERVE)["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


def test_only_vllm_requests_gpus(rendered: list[dict[str, Any]]) -> None:
    vllm = _vllm(rendered)
    resources = vllm["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    for deployment in of_kind(rendered, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container is vllm:
                continue
            for amounts in container["resources"].values():
                assert not [r for r in amounts if "gpu" in r], container["name"]


def test_vllm_drains_within_the_pods_grace_period(rendered: list[dict[str, Any]]) -> None:
    """Both containers get SIGTERM together: vLLM waits so that the answers serve is
    finishing still reach it, and stops before the kubelet kills the pod."""
    command = _vllm(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert int(command[1]) < _pod(rendered)["terminationGracePeriodSeconds"]


def test_secrets_reach_the_pod_by_reference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "serve": {
            "vllm": {
                "hfToken": {"existingSecret": "hf", "key": "token"},
                "apiKey": {"existingSecret": "vllm-key", "key": "api-key"},
            },
        }
    }
    objects = render.objects(render.render(values))
    serve = service_container(named(objects, "Deployment", SERVE))
    vllm = _vllm(objects)
    serve_env, vllm_env = _env(serve), _env(vllm)
    assert serve_env["TUNEWIRE_PRINCIPALS"] == {
        "secretKeyRef": {"name": "tunewire-principals", "key": "principals"}
    }
    assert vllm_env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    # The key vLLM requires is the key serve sends.
    assert vllm_env["VLLM_API_KEY"] == serve_env["TUNEWIRE_VLLM__API_KEY"]
    assert vllm_env["VLLM_API_KEY"] == {"secretKeyRef": {"name": "vllm-key", "key": "api-key"}}
    assert "HF_TOKEN" not in serve_env and "TUNEWIRE_PRINCIPALS" not in vllm_env
    config = named(objects, "ConfigMap", SERVE)["data"]
    assert not {"TUNEWIRE_PRINCIPALS", "TUNEWIRE_VLLM__API_KEY"} & set(config)
    settings = _settings(objects, monkeypatch)
    client = next(p for p in settings.principals if p.name == "support-bot")
    assert (client.roles, client.objectives, client.requests_per_minute) == (
        {"client"},
        {"support-intent"},
        120,
    )
    assert "a-long-random-client-token" not in SECRET_VALUES["principals"]
    assert settings.vllm.api_key is not None
    assert settings.vllm.api_key.get_secret_value() == "secret-api-key"


def test_the_service_exposes_only_the_gateway(rendered: list[dict[str, Any]]) -> None:
    service = named(rendered, "Service", SERVE)
    (port,) = service["spec"]["ports"]
    serve = service_container(named(rendered, "Deployment", SERVE))
    (http,) = serve["ports"]
    assert (port["targetPort"], http["name"]) == ("http", "http")
    assert port["port"] == http["containerPort"] == 8080
    # Clients (and Prometheus) reach the gateway only; vLLM's port is not even on the pod IP.
    allow = named(rendered, "NetworkPolicy", SERVE)["spec"]
    assert {p["port"] for rule in allow["ingress"] for p in rule["ports"]} == {8080}


def test_serve_has_no_kubernetes_api_access(rendered: list[dict[str, Any]]) -> None:
    pod = _pod(rendered)
    assert pod["automountServiceAccountToken"] is False
    account = named(rendered, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    for kind in ("Role", "RoleBinding"):
        assert SERVE not in {o["metadata"]["name"] for o in of_kind(rendered, kind)}


def test_autoscaling_targets_the_pod_with_extra_metrics() -> None:
    values = load_values("values-production.yaml")
    objects = render.objects(render.render(values))
    hpa = named(objects, "HorizontalPodAutoscaler", SERVE)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": SERVE,
    }
    assert hpa["spec"]["metrics"][1:] == values["serve"]["autoscaling"]["extraMetrics"]
    default = render.objects(render.render())
    assert not of_kind(default, "HorizontalPodAutoscaler")
    assert named(default, "Deployment", SERVE)["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    "values",
    [
        {"serve": {"enabled": False}},
        {
            "serve": {
                "vllm": {
                    "huggingFaceHub": {
                        "enabled": True,
                        "endpoint": "https://hf-mirror.example.com",
                        "to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}],
                    },
                    "modelCache": {"existingClaim": "hf-cache"},
                    "gpu": {"resource": "amd.com/gpu", "count": 4},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 2000,
                        "readOnlyRootFilesystem": False,
                    },
                },
                "autoscaling": {"enabled": True},
            }
        },
    ],
    ids=["disabled", "mirror-claim-amd-writable-root"],
)
def test_other_serve_values_render_valid_objects(values: dict[str, Any]) -> None:
    objects = render.objects(render.render(values, api_versions=["monitoring.coreos.com/v1"]))
    for obj in objects:
        if obj["kind"] not in {"ServiceMonitor", "PrometheusRule"}:
            kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    if not values["serve"].get("enabled", True):
        assert not [n for n in names if n[1] == SERVE]
        assert "tunewire-test-serve" not in {o["metadata"]["name"] for o in of_kind(objects, "Pod")}
        return
    vllm = _vllm(objects)
    assert _env(vllm)["HF_ENDPOINT"] == "https://hf-mirror.example.com"
    assert vllm["resources"]["limits"]["amd.com/gpu"] == "4"
    assert _option(vllm, "--tensor-parallel-size") == "4"
    assert vllm["securityContext"]["readOnlyRootFilesystem"] is False
    # Downloads go to the claim: it is mounted writable.
    (mount,) = [m for m in vllm["volumeMounts"] if m["name"] == "models"]
    assert mount["readOnly"] is False
    hub = named(objects, "NetworkPolicy", SERVE)["spec"]["egress"][3]
    assert hub["to"] == [{"ipBlock": {"cidr": "10.30.0.0/24"}}]
    assert ("HorizontalPodAutoscaler", SERVE) in names


def test_the_install_guide_covers_serving() -> None:
    guide = (render.ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    for topic in (
        "GPU nodes for serving",
        "--role client",
        "serve.vllm.nodeSelector",
        "serve.vllm.securityContext",
        "serve.autoscaling",
        "reconciles its own vLLM",
        "tunewire-serve-",
    ):
        assert topic in guide, topic
