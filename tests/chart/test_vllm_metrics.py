"""vLLM's own metrics (serve.vllm.metrics): scraped through serve, never from vLLM's port.

vLLM listens on the pod's loopback, and its API has no authentication of its own beyond an
optional key on /v1 (where /v1/load_lora_adapter is): opening its port to Prometheus would
open all of it to whatever the network policy admits. So serve relays vLLM's /metrics, and
nothing else of vLLM, at /metrics/vllm on its own port, which Prometheus may already reach;
the chart adds only a second endpoint to serve's ServiceMonitor. These tests hold the chart
to that: with the switch on, the render differs from the one without it in that endpoint
alone (no port, no container, no network rule), and the endpoint's job is not serve's, so
serve's up alerts keep meaning serve.
"""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest

from tests.chart import render
from tests.support.chart import MONITORING, load_values, named, of_kind

SERVE = "tunewire-serve"
VLLM_JOB = "tunewire-serve-vllm"
ON: dict[str, Any] = {
    "serve": {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "20s"}},
        "vllm": {"metrics": {"enabled": True}},
    }
}
#: The fields of the Prometheus Operator's ServiceMonitor endpoint (monitoring.coreos.com/v1
#: Endpoint and RelabelConfig) this chart uses; kubernetes-validate knows no custom resource.
ENDPOINT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port", "path"],
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
        "scheme": {"enum": ["http", "https"]},
        "relabelings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "action": {"enum": ["replace", "Replace", "keep", "drop", "labelmap"]},
                    "sourceLabels": {"type": "array", "items": {"type": "string"}},
                    "separator": {"type": "string"},
                    "targetLabel": {"type": "string"},
                    "regex": {"type": "string"},
                    "replacement": {"type": "string"},
                },
            },
        },
    },
}


def _objects(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    return render.objects(render.render(values, api_versions=[MONITORING]))


@pytest.fixture(scope="module")
def scraped() -> list[dict[str, Any]]:
    return _objects(ON)


def _endpoints(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    endpoints: list[dict[str, Any]] = named(objects, "ServiceMonitor", SERVE)["spec"]["endpoints"]
    return {e["path"]: e for e in endpoints}


def test_serves_monitor_scrapes_vllm_through_serves_port(scraped: list[dict[str, Any]]) -> None:
    endpoints = _endpoints(scraped)
    assert set(endpoints) == {"/metrics", "/metrics/vllm"}
    own, vllm = endpoints["/metrics"], endpoints["/metrics/vllm"]
    for endpoint in endpoints.values():
        jsonschema.validate(endpoint, ENDPOINT_SCHEMA)
    # The same port (the Service's `http`, serve's container port) and interval as serve's.
    assert (vllm["port"], vllm["scheme"], vllm["interval"]) == ("http", "http", "20s")
    assert (own["port"], own["interval"]) == ("http", "20s")
    service = named(scraped, "Service", SERVE)
    (port,) = service["spec"]["ports"]
    assert port["name"] == vllm["port"] and port["targetPort"] == "http"
    # Its own job: the targets differ from serve's (same pod and port, another path).
    assert vllm["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": VLLM_JOB}
    ]
    assert "relabelings" not in own


def test_nothing_but_the_endpoint_changes(scraped: list[dict[str, Any]]) -> None:
    """No port, container, Service port or network rule is added: vLLM stays on loopback,
    and Prometheus reaches serve's port as it already did."""
    off = _objects({"serve": {**ON["serve"], "vllm": {"metrics": {"enabled": False}}}})

    def without_monitor(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            o for o in objects if (o["kind"], o["metadata"]["name"]) != ("ServiceMonitor", SERVE)
        ]

    assert without_monitor(scraped) == without_monitor(off)
    (only,) = named(off, "ServiceMonitor", SERVE)["spec"]["endpoints"]
    assert only == _endpoints(scraped)["/metrics"]
    with_, without = named(scraped, "ServiceMonitor", SERVE), named(off, "ServiceMonitor", SERVE)
    assert with_["metadata"] == without["metadata"]
    assert {k: v for k, v in with_["spec"].items() if k != "endpoints"} == {
        k: v for k, v in without["spec"].items() if k != "endpoints"
    }
    pod = named(scraped, "Deployment", SERVE)["spec"]["template"]["spec"]
    (vllm,) = [c for c in pod["containers"] if c["name"] == "vllm"]
    assert "ports" not in vllm
    host = vllm["args"][vllm["args"].index("--host") + 1]
    assert host == "127.0.0.1"
    policy = named(scraped, "NetworkPolicy", SERVE)["spec"]
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {8080}
    # Prometheus' namespace may reach that port (the rule that already admits its scrapes).
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    assert prometheus in policy["ingress"][0]["from"]


def test_the_objects_validate(scraped: list[dict[str, Any]]) -> None:
    for obj in scraped:
        if obj["kind"] not in {"ServiceMonitor", "PrometheusRule"}:
            kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
    for monitor in of_kind(scraped, "ServiceMonitor"):
        assert monitor["apiVersion"] == MONITORING
        for endpoint in monitor["spec"]["endpoints"]:
            jsonschema.validate(endpoint, ENDPOINT_SCHEMA)


@pytest.mark.parametrize(
    ("values", "api_versions"),
    [
        (None, [MONITORING]),  # off by default
        ({"serve": {"vllm": {"metrics": {"enabled": True}}}}, [MONITORING]),  # no monitor
        (ON, []),  # no Prometheus Operator API
    ],
    ids=["default", "without-service-monitor", "without-operator"],
)
def test_the_endpoint_needs_serves_monitor_and_the_switch(
    values: dict[str, Any] | None, api_versions: list[str]
) -> None:
    objects = render.objects(render.render(values, api_versions=api_versions))
    for monitor in of_kind(objects, "ServiceMonitor"):
        assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]
    assert VLLM_JOB not in str(objects)


def test_production_values_leave_it_off(production_objects: list[dict[str, Any]]) -> None:
    values = load_values("values-production.yaml")
    assert not values["serve"].get("vllm", {}).get("metrics", {}).get("enabled", False)
    assert list(_endpoints(production_objects)) == ["/metrics"]


def test_serves_up_alerts_do_not_count_vllms_job() -> None:
    values = {**ON, "observability": {"prometheusRule": {"enabled": True}}}
    rules = {
        rule["alert"]: rule["expr"]
        for rule_object in of_kind(_objects(values), "PrometheusRule")
        for group in rule_object["spec"]["groups"]
        for rule in group["rules"]
    }
    # Prometheus anchors regular expressions: job=~"tunewire-serve" never matches -vllm.
    assert 'job=~"tunewire-serve"' in rules["TunewireTargetDown"]
    assert 'absent(up{namespace="tunewire",job="tunewire-serve"})' in rules["TunewireServiceDown"]
    assert not [name for name, expr in rules.items() if VLLM_JOB in expr]


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"enabled": "yes"}, "at '/serve/vllm/metrics/enabled'"),
        ({"enable": True}, "additional properties 'enable' not allowed"),
    ],
)
def test_wrong_values_are_refused(metrics: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render.render({"serve": {"vllm": {"metrics": metrics}}})
    assert expected in str(refused.value)


def test_the_install_guide_says_what_to_watch() -> None:
    guide = (render.ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    for topic in (
        "serve.vllm.metrics.enabled",
        "/metrics/vllm",
        VLLM_JOB,
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:lora_requests_info",
    ):
        assert topic in guide, topic
