"""values.schema.json refuses wrong values with a message that points at the mistake."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml

from tests.chart import render
from tests.support.chart import VALUES_DIR, load_values


def _refusal(values: dict[str, Any]) -> str:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render.render(values)
    return str(refused.value)


def test_the_wrong_values_file_fails_with_the_schema_message() -> None:
    message = _refusal(load_values("values-wrong.yaml"))
    assert "at '/ingest/replicas': got string, want integer" in message
    assert "at '/label': additional properties 'replica' not allowed" in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"serve": {"vllm": {"maxLoras": 8, "maxCpuLoras": 4}}},
            "serve.vllm.maxCpuLoras (4) must be at least serve.vllm.maxLoras (8): vLLM refuses",
        ),
        (
            {"serve": {"terminationGracePeriodSeconds": 30, "vllm": {"drainSeconds": 30}}},
            "serve.vllm.drainSeconds (30) must be below serve.terminationGracePeriodSeconds (30)",
        ),
    ],
)
def test_inconsistent_serve_values_fail_the_render(values: dict[str, Any], expected: str) -> None:
    """What the schema cannot compare, the templates refuse with a message."""
    with pytest.raises(helm_python.HelmRenderError) as refused:
        render.render(values)
    assert expected in str(refused.value)


SASL_PLAINTEXT: dict[str, Any] = {
    "global": {
        "kafka": {
            "securityProtocol": "SASL_PLAINTEXT",
            "saslMechanism": "SCRAM-SHA-512",
            "sasl": {"existingSecret": "kafka-credentials"},
        }
    },
    "workloads": {"credentials": {"existingSecret": "workload-credentials"}},
}


@pytest.mark.parametrize(
    "values",
    [{"global": {"kafka": {"securityProtocol": "PLAINTEXT"}}}, SASL_PLAINTEXT],
    ids=["plaintext", "sasl-plaintext"],
)
def test_production_refuses_unencrypted_kafka_until_the_operator_consents(
    values: dict[str, Any],
) -> None:
    protocol = values["global"]["kafka"]["securityProtocol"]
    with pytest.raises(helm_python.HelmRenderError) as refused:
        render.render(values)
    assert f"global.kafka.securityProtocol is {protocol}: events and control messages" in str(
        refused.value
    )
    assert "global.kafka.allowPlaintext: true" in str(refused.value)

    consented = {
        **values,
        "global": {"kafka": {**values["global"]["kafka"], "allowPlaintext": True}},
    }
    development = {**values, "global": {**values["global"], "environment": "development"}}
    for accepted in (consented, development):
        objects = render.objects(render.render(accepted))
        assert any(o["kind"] == "Deployment" for o in objects)


def test_lint_reports_the_wrong_values_file() -> None:
    report = helm_python.lint(render.CHART, load_values("values-wrong.yaml"), strict=True)
    assert any("got string, want integer" in str(m["error"]) for m in report["messages"])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"global": {"image": {"tag": "latest"}}}, "at '/global/image/tag'"),
        ({"ingest": {"image": {"tag": "latest"}}}, "at '/ingest/image/tag'"),
        ({"global": {"kafka": {"securityProtocol": "TLS"}}}, "at '/global/kafka/securityProtocol'"),
        (
            {"global": {"kafka": {"securityProtocol": "SASL_SSL"}}},
            "at '/global/kafka/saslMechanism'",
        ),
        (
            {
                "global": {
                    "kafka": {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512"}
                }
            },
            "at '/global/kafka/sasl/existingSecret'",
        ),
        ({"global": {"kafka": {"bootstrapServers": "kafka"}}}, "bootstrapServers"),
        ({"global": {"environment": "staging"}}, "at '/global/environment'"),
        ({"global": {"s3": {"bucket": "Not_A_Bucket"}}}, "at '/global/s3/bucket'"),
        ({"global": {"api": {"principals": {"existingSecret": ""}}}}, "existingSecret"),
        ({"global": {"kafka": {"password": "hunter2"}}}, "additional properties 'password'"),
        (
            {"ingest": {"env": {"TUNEWIRE_PRINCIPALS": "[]"}}},
            "at '/ingest/env/TUNEWIRE_PRINCIPALS'",
        ),
        ({"ingest": {"env": {"PATH": "/bin"}}}, "invalid propertyName 'PATH'"),
        ({"label": {"rbac": {"create": True}}}, "at '/label/rbac/create'"),
        # null deletes a default in Helm: a container without a memory request is refused.
        (
            {"label": {"resources": {"requests": {"memory": None}}}},
            "at '/label/resources/requests': missing property 'memory'",
        ),
        ({"ingest": {"port": 80}}, "at '/ingest/port'"),
        # The controllers: one replica, no autoscaling, their own limits, no launcher in env.
        ({"train": {"replicas": 2}}, "at '/train/replicas': maximum: got 2, want 1"),
        ({"evaluate": {"autoscaling": {"enabled": True}}}, "additional properties 'autoscaling'"),
        ({"train": {"limits": {"maxRunning": 0}}}, "at '/train/limits/maxRunning'"),
        ({"train": {"limits": {"gpuBudget": -1}}}, "at '/train/limits/gpuBudget'"),
        ({"train": {"limits": {"maxParallel": 3}}}, "additional properties 'maxParallel'"),
        ({"evaluate": {"limits": {"maxRunning": 3}}}, "additional properties 'maxRunning'"),
        ({"evaluate": {"limits": {"maxAttempts": 0}}}, "at '/evaluate/limits/maxAttempts'"),
        # The console's overview: on or off; its peers are the chart's, and only evaluate's.
        ({"evaluate": {"console": {"enabled": "yes"}}}, "at '/evaluate/console/enabled'"),
        ({"evaluate": {"console": "on"}}, "at '/evaluate/console': got string, want object"),
        (
            {"evaluate": {"console": {"peers": {"label": "http://label:8080"}}}},
            "at '/evaluate/console': additional properties 'peers'",
        ),
        (
            {"evaluate": {"env": {"TUNEWIRE_CONSOLE__PEERS": "{}"}}},
            "at '/evaluate/env/TUNEWIRE_CONSOLE__PEERS'",
        ),
        ({"train": {"console": {"enabled": True}}}, "at '/train/console'"),
        ({"train": {"rbac": {"create": "yes"}}}, "at '/train/rbac/create'"),
        ({"train": {"image": {"tag": "latest"}}}, "at '/train/image/tag'"),
        (
            {"train": {"env": {"TUNEWIRE_LAUNCHER__KUBERNETES__NAMESPACE": "other"}}},
            "invalid propertyName 'TUNEWIRE_LAUNCHER__KUBERNETES__NAMESPACE'",
        ),
        # A Role must never be bound to the namespace's default account.
        (
            {"evaluate": {"serviceAccount": {"create": False}}},
            "at '/evaluate/serviceAccount/name': minLength",
        ),
        (
            {"train": {"serviceAccount": {"create": False, "name": "default"}}},
            "at '/train/serviceAccount/name'",
        ),
        # The workloads.
        ({"workloads": {"image": {"tag": "latest"}}}, "at '/workloads/image/tag'"),
        ({"workloads": {"image": {"repository": ""}}}, "at '/workloads/image/repository'"),
        ({"workloads": {"gpu": {"resource": "GPU"}}}, "at '/workloads/gpu/resource'"),
        ({"workloads": {"gpu": {"count": 2}}}, "additional properties 'count'"),
        (
            {"workloads": {"tolerations": [{"key": "gpu", "operator": "In"}]}},
            "at '/workloads/tolerations/0/operator'",
        ),
        (
            {"workloads": {"tolerations": [{"key": "gpu", "tolerationSeconds": 60}]}},
            "additional properties 'tolerationSeconds'",
        ),
        ({"workloads": {"nodeSelector": {"gpu": True}}}, "at '/workloads/nodeSelector/gpu'"),
        ({"workloads": {"activeDeadlineSeconds": 30}}, "at '/workloads/activeDeadlineSeconds'"),
        ({"workloads": {"backoffLimit": -1}}, "at '/workloads/backoffLimit'"),
        ({"workloads": {"pendingTimeoutSeconds": 0}}, "at '/workloads/pendingTimeoutSeconds'"),
        (
            {"workloads": {"resources": {"limits": {"memory": "32Gi", "cpu": "4"}}}},
            "additional properties 'cpu'",
        ),
        (
            {"workloads": {"env": {"TUNEWIRE_KAFKA__SASL_PASSWORD": "hunter2"}}},
            "at '/workloads/env/TUNEWIRE_KAFKA__SASL_PASSWORD'",
        ),
        (
            {"workloads": {"credentials": {"existingSecret": "Not_A_Secret"}}},
            "at '/workloads/credentials/existingSecret'",
        ),
        # With SASL the Jobs need their credentials Secret too.
        (
            {
                "global": {
                    "kafka": {
                        "securityProtocol": "SASL_SSL",
                        "saslMechanism": "SCRAM-SHA-512",
                        "sasl": {"existingSecret": "tunewire-kafka"},
                    }
                }
            },
            "at '/workloads/credentials/existingSecret'",
        ),
        (
            {"global": {"networkPolicy": {"kubernetesApi": {"ports": []}}}},
            "at '/global/networkPolicy/kubernetesApi/ports'",
        ),
        # serve: no Role, principals only from a Secret, vLLM's port and flags the chart's.
        ({"serve": {"rbac": {"create": True}}}, "at '/serve/rbac/create'"),
        ({"serve": {"clients": {"existingSecret": "old"}}}, "additional properties 'clients'"),
        ({"serve": {"env": {"TUNEWIRE_PRINCIPALS": "[]"}}}, "at '/serve/env/TUNEWIRE_PRINCIPALS'"),
        (
            {"serve": {"env": {"TUNEWIRE_CONSUMER_GROUP": "tunewire-serve"}}},
            "at '/serve/env/TUNEWIRE_CONSUMER_GROUP'",
        ),
        (
            {"serve": {"env": {"TUNEWIRE_VLLM__BASE_URL": "http://vllm:8000"}}},
            "at '/serve/env/TUNEWIRE_VLLM__BASE_URL'",
        ),
        (
            {"serve": {"env": {"TUNEWIRE_SERVE__MAX_ADAPTERS": "20"}}},
            "at '/serve/env/TUNEWIRE_SERVE__MAX_ADAPTERS'",
        ),
        ({"serve": {"port": 8000}}, "at '/serve/port'"),
        ({"serve": {"baseName": "base@v1"}}, "at '/serve/baseName'"),
        ({"serve": {"nodeSelector": {"gpu": "yes"}}}, "additional properties 'nodeSelector'"),
        ({"serve": {"vllm": {"image": {"tag": "latest"}}}}, "at '/serve/vllm/image/tag'"),
        ({"serve": {"vllm": {"image": {"tag": ""}}}}, "at '/serve/vllm/image/tag'"),
        ({"serve": {"vllm": {"model": ""}}}, "at '/serve/vllm/model'"),
        ({"serve": {"vllm": {"gpu": {"count": 0}}}}, "at '/serve/vllm/gpu/count'"),
        ({"serve": {"vllm": {"maxLoraRank": 24}}}, "at '/serve/vllm/maxLoraRank'"),
        ({"serve": {"vllm": {"extraArgs": ["--port", "9000"]}}}, "at '/serve/vllm/extraArgs/0'"),
        (
            {"serve": {"vllm": {"extraArgs": ["--max-model-len", "8192", "--host=0.0.0.0"]}}},
            "at '/serve/vllm/extraArgs/2'",
        ),
        ({"serve": {"vllm": {"env": {"HF_TOKEN": "hf_x"}}}}, "at '/serve/vllm/env/HF_TOKEN'"),
        ({"serve": {"vllm": {"hfToken": {"token": "hf_x"}}}}, "additional properties 'token'"),
        (
            {"serve": {"vllm": {"tolerations": [{"key": "gpu", "operator": "In"}]}}},
            "at '/serve/vllm/tolerations/0/operator'",
        ),
        # Offline, the model must be on a claim.
        (
            {"serve": {"vllm": {"huggingFaceHub": {"enabled": False}}}},
            "at '/serve/vllm/modelCache/existingClaim'",
        ),
        ({"serve": {"rollingUpdate": {"maxSurge": "one"}}}, "at '/serve/rollingUpdate/maxSurge'"),
    ],
)
def test_wrong_values_are_refused(values: dict[str, Any], expected: str) -> None:
    assert expected in _refusal(values)


def _documented(lines: list[str], number: int) -> bool:
    """Whether the comment block right above line ``number`` holds a `# --` description."""
    above = number - 1
    while above >= 0 and lines[above].strip().startswith("#"):
        if lines[above].strip().startswith("# --"):
            return True
        above -= 1
    return False


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a `# --` comment, on itself or on an enclosing key (a
    whole security context or map of settings is documented once)."""
    lines = (render.CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    undocumented: list[str] = []
    parents: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while parents and parents[-1][0] >= indent:
            parents.pop()
        documented = _documented(lines, number) or any(d for _, d in parents)
        is_group = stripped.endswith(":")
        if not documented and not is_group:
            undocumented.append(f"{number + 1}: {stripped}")
        parents.append((indent, documented))
    assert undocumented == []


def test_sasl_without_train_and_evaluate_needs_no_workload_secret() -> None:
    kafka = {
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "sasl": {"existingSecret": "tunewire-kafka"},
    }
    off = {"enabled": False}
    render.render({"global": {"kafka": kafka}, "train": off, "evaluate": off})


def test_schema_and_defaults_agree() -> None:
    schema = json.loads((render.CHART / "values.schema.json").read_text(encoding="utf-8"))
    defaults = yaml.safe_load((render.CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(defaults) == set(schema["properties"])
    # The production-like file only uses keys the schema knows (render would refuse it).
    render.render(load_values("values-production.yaml"))
    assert (VALUES_DIR / "values-production.yaml").is_file()
