"""Alerts and dashboard: gated like the ServiceMonitors, documented, and built only on metrics
the services really export."""

from __future__ import annotations

import importlib
import json
import re
import typing
from collections.abc import Iterator
from typing import Any

import helm_python
import kubernetes_validate
import prometheus_client
import pytest

from tests.chart import render
from tests.support.chart import MONITORING, named, of_kind
from tunewire.contracts.v1 import training_pb2
from tunewire.core.state import registry
from tunewire.serve import gateway

RUNBOOKS = render.ROOT / "docs" / "runbooks.md"
DASHBOARD = render.CHART / "dashboards" / "pipeline.json"
#: The modules that define every metric the services export.
METRIC_MODULES = (
    "tunewire.core.bus.consuming",
    "tunewire.core.process.http",
    "tunewire.ingest.pipeline",
    "tunewire.ingest.archive",
    "tunewire.label.pipeline",
    "tunewire.train.controller",
    "tunewire.evaluate.controller",
    "tunewire.core.launchers.kubejobs",
    "tunewire.serve.gateway",
    "tunewire.serve.deployments",
)
#: Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {"up"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
ALERT_KEYS = (
    "consumerLagGrowing",
    "deadLetters",
    "flushFailing",
    "ingestRejections",
    "httpErrors",
    "targetDown",
    "serviceDown",
    "labelQueueGrowing",
    "ruleCoverageCollapsed",
    "noSnapshot",
    "trainingFailures",
    "trainingPendingNoGpu",
    "gateRejectionsSpiking",
    "serveErrorRate",
    "serveLatencySlo",
    "adapterLoadFailures",
)
SERVICES = ("ingest", "label", "train", "evaluate", "serve")
SERVE_ALERTS = {"TunewireServeErrorRate", "TunewireServeLatencySLO", "TunewireAdapterLoadFailures"}

ALL_ON: dict[str, Any] = {
    "observability": {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}},
    **{s: {"metrics": {"serviceMonitor": {"enabled": True}}} for s in SERVICES},
}


def _objects(values: dict[str, Any] | None, api_versions: list[str]) -> list[dict[str, Any]]:
    return render.objects(render.render(values, api_versions=api_versions))


def _rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for rule_object in of_kind(objects, "PrometheusRule")
        for group in rule_object["spec"]["groups"]
        for rule in group["rules"]
    ]


def _alert_names(objects: list[dict[str, Any]]) -> set[str]:
    return {rule["alert"] for rule in _rules(objects)}


@pytest.fixture(scope="module")
def observed() -> list[dict[str, Any]]:
    """Everything on, on a cluster with the Prometheus Operator's API."""
    return _objects(ALL_ON, [MONITORING])


@pytest.fixture(scope="module")
def alerts(observed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = _rules(observed)
    assert found
    return found


@pytest.fixture(scope="module")
def dashboard(observed: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = named(observed, "ConfigMap", "tunewire-dashboard")
    (text,) = config_map["data"].values()
    parsed: dict[str, Any] = json.loads(text)
    return parsed


# -- metric names ---------------------------------------------------------------------------


def exported_series() -> set[str]:
    """Every series name the services' metrics can produce, read from the registry after
    importing the modules that define them (suffixes as the exposition format writes them)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "enum": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "unknown": ("",),
    }
    names: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_NOT_METRICS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana query) selects: identifiers left
    once strings, label matchers, ranges, groupings, Grafana variables, numbers, keywords and
    function calls are taken out."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word in _NOT_METRICS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'sum by (group, le) (rate(tunewire_consumer_flush_seconds_bucket{namespace="a",'
        'job=~"x|y"}[$__rate_interval])) > 1e3 and on (group) up offset 5m'
        " unless histogram_quantile(0.99, foo:bar) > bool 2"
    )
    assert metric_names(expr) == {"tunewire_consumer_flush_seconds_bucket", "up", "foo:bar"}
    # A Grafana label_values(<selector>, <label>) query: only the selector names a metric.
    variable = {"name": "ns", "type": "query", "query": {"query": "label_values(up, namespace)"}}
    queries = dict(_dashboard_queries({"panels": [], "templating": {"list": [variable]}}))
    assert queries == {"$ns": "up"}
    assert metric_names("x{a='}'}[1h:5m] * 2") == {"x"}


def test_the_exported_series_have_their_suffixes() -> None:
    exported = exported_series()
    assert {
        "tunewire_dlq_messages_total",
        "tunewire_consumer_lag",
        "tunewire_http_request_seconds_count",
        "tunewire_http_request_seconds_bucket",
        "tunewire_ingest_archive_bytes_total",
        "tunewire_label_queue_depth",
    } <= exported
    assert "tunewire_dlq_messages" not in exported  # a counter is only scraped with _total


def _unexported(expressions: dict[str, str]) -> dict[str, list[str]]:
    known = exported_series() | PROMETHEUS_SERIES
    missing = {where: sorted(metric_names(expr) - known) for where, expr in expressions.items()}
    return {where: names for where, names in missing.items() if names}


def test_every_alert_reads_metrics_the_code_exports(alerts: list[dict[str, Any]]) -> None:
    expressions = {rule["alert"]: rule["expr"] for rule in alerts}
    assert all(metric_names(expr) for expr in expressions.values())
    assert _unexported(expressions) == {}


def _dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and templating query."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"{panel['title']}/{target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        # label_values(<series selector>, <label>): only the selector names a metric.
        selector = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
        yield f"${variable['name']}", selector.group(1) if selector else query


def test_every_dashboard_query_reads_metrics_the_code_exports(dashboard: dict[str, Any]) -> None:
    expressions = dict(_dashboard_queries(dashboard))
    assert len(expressions) > 20
    assert all(metric_names(expr) for expr in expressions.values())
    assert _unexported(expressions) == {}


def test_a_misspelt_metric_is_reported_by_name() -> None:
    assert _unexported({"typo": "rate(tunewire_dlq_message_total[5m]) > 0 or up == 0"}) == {
        "typo": ["tunewire_dlq_message_total"]
    }


# -- the PrometheusRule ---------------------------------------------------------------------


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _runbook_anchors() -> set[str]:
    text = RUNBOOKS.read_text(encoding="utf-8")
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def test_every_alert_is_documented_with_a_runbook_section(alerts: list[dict[str, Any]]) -> None:
    anchors = _runbook_anchors()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)) == len(ALERT_KEYS)
    for rule in alerts:
        name = rule["alert"]
        assert name.startswith("Tunewire"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert DURATION.match(rule["for"]), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.startswith("https://") and url.endswith("/docs/runbooks.md"), name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: docs/runbooks.md has no section #{anchor}"
        assert rule["expr"].count("(") == rule["expr"].count(")"), name


def test_every_alert_section_in_the_runbooks_has_its_alert(alerts: list[dict[str, Any]]) -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (Tunewire\w+)$", text, flags=re.MULTILINE))
    assert sections == {rule["alert"] for rule in alerts}


def test_alert_texts_use_prometheus_templating(alerts: list[dict[str, Any]]) -> None:
    """Helm must leave {{ $labels.x }} and {{ $value }} for Prometheus to fill in."""
    for rule in alerts:
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "{{ $labels." in text, rule["alert"]
        for label in re.findall(r"\$labels\.(\w+)", text):
            grouped = re.findall(r"\bby \(([^)]*)\)", rule["expr"])
            kept = {part.strip() for group in grouped for part in group.split(",")}
            if kept:  # an aggregation keeps only its `by` labels
                assert label in kept | {"job", "namespace", "pod"}, (rule["alert"], label)
        assert "%!" not in text, rule["alert"]  # no printf mistakes


def test_the_rule_object_is_labelled_like_the_rest(observed: list[dict[str, Any]]) -> None:
    (rule_object,) = of_kind(observed, "PrometheusRule")
    assert rule_object["apiVersion"] == MONITORING
    assert rule_object["metadata"]["namespace"] == "tunewire"
    labels = rule_object["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "tunewire"
    assert labels["app.kubernetes.io/component"] == "observability"
    groups = [g["name"] for g in rule_object["spec"]["groups"]]
    assert groups == [
        "tunewire.availability",
        "tunewire.consumers",
        "tunewire.ingest",
        "tunewire.label",
        "tunewire.train",
        "tunewire.evaluate",
        "tunewire.serve",
    ]


def test_alerts_select_the_release_namespace(alerts: list[dict[str, Any]]) -> None:
    for rule in alerts:
        selectors = re.findall(r"\{([^{}]*)\}", rule["expr"])
        assert selectors and all('namespace="tunewire"' in s for s in selectors), rule["alert"]
    custom = {**ALL_ON, "observability": {**ALL_ON["observability"], "selector": 'cluster="eu-1"'}}
    for rule in _rules(_objects(custom, [MONITORING])):
        assert 'namespace="tunewire"' not in rule["expr"]
        assert 'cluster="eu-1"' in rule["expr"], rule["alert"]


@pytest.mark.parametrize(
    ("values", "api_versions"),
    [
        (None, [MONITORING]),  # off by default
        (ALL_ON, []),  # the API is absent: an unknown kind would fail the install
        ({**ALL_ON, "observability": {"prometheusRule": {"enabled": False}}}, [MONITORING]),
    ],
    ids=["default", "no-operator", "disabled"],
)
def test_the_rule_is_gated_on_the_value_and_the_operator_api(
    values: dict[str, Any] | None, api_versions: list[str]
) -> None:
    assert not of_kind(_objects(values, api_versions), "PrometheusRule")


def test_up_alerts_only_for_services_with_a_service_monitor() -> None:
    values = {
        "observability": {"prometheusRule": {"enabled": True}},
        "ingest": {"metrics": {"serviceMonitor": {"enabled": True}}},
    }
    rules = {r["alert"]: r for r in _rules(_objects(values, [MONITORING]))}
    assert 'job=~"tunewire-ingest"' in rules["TunewireTargetDown"]["expr"]
    assert "tunewire-label" not in rules["TunewireServiceDown"]["expr"]
    assert (
        'absent(up{namespace="tunewire",job="tunewire-ingest"})'
        in (rules["TunewireServiceDown"]["expr"])
    )
    # Without any ServiceMonitor the chart cannot know the scrape jobs: no up alerts.
    without = _alert_names(_objects({"observability": values["observability"]}, [MONITORING]))
    assert not without & {"TunewireTargetDown", "TunewireServiceDown"}
    assert "TunewireConsumerLagGrowing" in without


def test_alerts_follow_the_services_and_their_switches() -> None:
    no_label = _alert_names(_objects({**ALL_ON, "label": {"enabled": False}}, [MONITORING]))
    assert not {n for n in no_label if "Label" in n or "Snapshot" in n or "Rule" in n}
    assert "TunewireIngestRejectingEvents" in no_label
    no_train = _alert_names(_objects({**ALL_ON, "train": {"enabled": False}}, [MONITORING]))
    assert not {n for n in no_train if "Training" in n}
    assert "TunewireGateRejectionsSpiking" in no_train
    no_evaluate = _alert_names(_objects({**ALL_ON, "evaluate": {"enabled": False}}, [MONITORING]))
    assert "TunewireGateRejectionsSpiking" not in no_evaluate
    assert {"TunewireTrainingFailures", "TunewireTrainingPendingNoGPU"} <= no_evaluate
    assert no_evaluate >= SERVE_ALERTS
    no_serve = _alert_names(_objects({**ALL_ON, "serve": {"enabled": False}}, [MONITORING]))
    assert not no_serve & SERVE_ALERTS
    assert "TunewireGateRejectionsSpiking" in no_serve
    off = {key: {"enabled": False} for key in ALERT_KEYS}
    off["deadLetters"] = {"enabled": True}
    values = {**ALL_ON, "observability": {"prometheusRule": {"enabled": True, "alerts": off}}}
    objects = _objects(values, [MONITORING])
    assert _alert_names(objects) == {"TunewireDeadLetters"}
    (rule_object,) = of_kind(objects, "PrometheusRule")
    assert [g["name"] for g in rule_object["spec"]["groups"]] == ["tunewire.consumers"]
    off["deadLetters"] = {"enabled": False}
    assert not of_kind(_objects(values, [MONITORING]), "PrometheusRule")  # no empty rule


def test_thresholds_labels_and_runbook_url_come_from_values() -> None:
    values = {
        **ALL_ON,
        "observability": {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "additionalAlertLabels": {"team": "ml-platform", "severity": "ignored"},
                "runbookBaseUrl": "https://wiki.example.com/tunewire/docs/runbooks.md",
                "alerts": {
                    "consumerLagGrowing": {"threshold": 250, "for": "30m", "severity": "critical"},
                    "noSnapshot": {"threshold": 5000, "window": "12h"},
                },
            }
        },
    }
    objects = _objects(values, [MONITORING])
    (rule_object,) = of_kind(objects, "PrometheusRule")
    assert rule_object["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = {r["alert"]: r for r in _rules(objects)}
    lag = rules["TunewireConsumerLagGrowing"]
    assert "> 250" in lag["expr"] and lag["for"] == "30m"
    assert lag["labels"] == {"severity": "critical", "team": "ml-platform"}
    assert rules["TunewireDeadLetters"]["labels"]["severity"] == "warning"
    assert "[12h]" in rules["TunewireNoSnapshot"]["expr"]
    assert "> 5000" in rules["TunewireNoSnapshot"]["expr"]
    assert lag["annotations"]["runbook_url"] == (
        "https://wiki.example.com/tunewire/docs/runbooks.md#tunewireconsumerlaggrowing"
    )


# -- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_is_valid_json_with_panels_on_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    assert dashboard == json.loads(DASHBOARD.read_text(encoding="utf-8"))  # shipped as is
    assert dashboard["uid"] and dashboard["title"]
    (source,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1] == "Serve: answers"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "events in",
        "redactions",
        "dlq",
        "lag",
        "flush",
        "p99",
        "label outcomes",
        "coverage",
        "queue depth",
        "examples by source",
        "snapshot sizes",
        "runs queued",
        "failures by reason",
        "dataset event to job",
        "decisions",
        "rejected share",
        "gate failures",
        "requests by model and status",
        "5xx share",
        "answer latency",
        "time to first token",
        "tokens per second",
        "adapters loaded",
        "adapter load failures",
        "alias moves",
    ):
        assert topic in titles, topic


def test_the_dashboard_config_map_is_off_by_default_and_configurable() -> None:
    default = render.objects(render.render())
    assert not [o for o in default if o["metadata"]["name"].endswith("-dashboard")]
    values = {
        "observability": {
            "dashboard": {
                "enabled": True,
                "labels": {"grafana_dashboard": "tunewire"},
                "annotations": {"grafana_folder": "ML"},
                "namespace": "monitoring",
            }
        }
    }
    config_map = named(render.objects(render.render(values)), "ConfigMap", "tunewire-dashboard")
    kubernetes_validate.validate(config_map, render.KUBE_VERSION, strict=True)
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "tunewire"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML"}


def test_the_observability_objects_validate_and_lint(observed: list[dict[str, Any]]) -> None:
    for obj in observed:
        if obj["kind"] not in {"ServiceMonitor", "PrometheusRule"}:
            kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tunewire"
    report = helm_python.lint(
        render.CHART, ALL_ON, strict=True, namespace="tunewire", kube_version="v1.31.0"
    )
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"alerts": {"deadLetters": {"severity": "page"}}},
            "at '/observability/prometheusRule/alerts/deadLetters/severity'",
        ),
        (
            {"alerts": {"consumerLagGrowing": {"for": "10 minutes"}}},
            "at '/observability/prometheusRule/alerts/consumerLagGrowing/for'",
        ),
        (
            {"alerts": {"httpErrors": {"treshold": 1}}},
            "additional properties 'treshold' not allowed",
        ),
        (
            {"alerts": {"ingestRejections": {"ratio": 20}}},
            "at '/observability/prometheusRule/alerts/ingestRejections/ratio'",
        ),
        (
            {"runbookBaseUrl": "docs/runbooks.md#top"},
            "at '/observability/prometheusRule/runbookBaseUrl'",
        ),
        # A latency threshold between two buckets would match no series.
        (
            {"alerts": {"serveLatencySlo": {"thresholdSeconds": 7}}},
            "at '/observability/prometheusRule/alerts/serveLatencySlo/thresholdSeconds'",
        ),
        (
            {"alerts": {"serveErrorRate": {"thresholdSeconds": 10}}},
            "at '/observability/prometheusRule/alerts/serveErrorRate'",
        ),
        (
            {"alerts": {"serveErrorRate": {"objective": 1}}},
            "at '/observability/prometheusRule/alerts/serveErrorRate/objective'",
        ),
        (
            {"alerts": {"serveLatencySlo": {"windows": [{"long": "1h", "burnRate": 2}]}}},
            "missing property 'short'",
        ),
    ],
)
def test_wrong_observability_values_are_refused(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render.render({"observability": {"prometheusRule": values}})
    assert expected in str(refused.value)


def _burn_pairs(expr: str) -> list[list[tuple[str, str, str]]]:
    """Each window pair of a burn-rate expression as its three conditions: (window of the
    ratio or of the rate, comparison, threshold)."""
    pairs = []
    for block in expr.split("\nor\n"):
        conditions = re.findall(r"\[(\w+)\]\)\)\s*>\s*([^\n]+)", block)
        pairs.append([(window, ">", threshold.strip()) for window, threshold in conditions])
    return pairs


def test_openai_answers_page_once(alerts: list[dict[str, Any]]) -> None:
    """serve's completions have their own error budget; TunewireHTTPErrors leaves them to it
    (the gateway's requests are also in tunewire_http_request_seconds), unless it is off."""
    rules = {rule["alert"]: rule["expr"] for rule in alerts}
    excluded = 'route!~"/v1/(chat/)?completions"'
    assert rules["TunewireHTTPErrors"].count(excluded) == 3
    values = {
        **ALL_ON,
        "observability": {
            "prometheusRule": {"enabled": True, "alerts": {"serveErrorRate": {"enabled": False}}}
        },
    }
    without = {rule["alert"]: rule["expr"] for rule in _rules(_objects(values, [MONITORING]))}
    assert excluded not in without["TunewireHTTPErrors"]
    assert "TunewireServeErrorRate" not in without


def test_serve_alerts_burn_their_budgets_over_window_pairs(alerts: list[dict[str, Any]]) -> None:
    """Each window pair fires only when both its windows burn the budget faster than its
    rate, with traffic in the short one; the thresholds come from values."""
    rules = {rule["alert"]: rule["expr"] for rule in alerts}
    for name in ("TunewireServeErrorRate", "TunewireServeLatencySLO"):
        assert _burn_pairs(rules[name]) == [
            [
                ("1h", ">", "14.4 * (1 - 0.99)"),
                ("5m", ">", "14.4 * (1 - 0.99)"),
                ("5m", ">", "0.05"),
            ],
            [("6h", ">", "6 * (1 - 0.99)"), ("30m", ">", "6 * (1 - 0.99)"), ("30m", ">", "0.05")],
        ], name
    assert 'status=~"5.."' in rules["TunewireServeErrorRate"]
    latency = rules["TunewireServeLatencySLO"]
    # Slow answers are the successful ones outside the threshold's bucket.
    assert latency.count('status=~"2..",le="30.0"') == 4
    assert "5.." not in latency
    values = {
        **ALL_ON,
        "observability": {
            "prometheusRule": {
                "enabled": True,
                "alerts": {
                    "serveErrorRate": {
                        "objective": 0.999,
                        "minRate": 1,
                        "windows": [{"long": "3d", "short": "6h", "burnRate": 1}],
                    },
                    "serveLatencySlo": {"thresholdSeconds": 2.5},
                },
            }
        },
    }
    changed = {rule["alert"]: rule["expr"] for rule in _rules(_objects(values, [MONITORING]))}
    assert _burn_pairs(changed["TunewireServeErrorRate"]) == [
        [("3d", ">", "1 * (1 - 0.999)"), ("6h", ">", "1 * (1 - 0.999)"), ("6h", ">", "1")]
    ]
    assert 'le="2.5"' in changed["TunewireServeLatencySLO"]


def test_the_latency_thresholds_offered_are_buckets_of_the_histogram() -> None:
    """A threshold between buckets would match no `le` series and never alert."""
    schema = json.loads((render.CHART / "values.schema.json").read_text(encoding="utf-8"))
    alerts = schema["properties"]["observability"]["properties"]["prometheusRule"]["properties"]
    (extra,) = [
        part
        for part in alerts["alerts"]["properties"]["serveLatencySlo"]["allOf"]
        if "properties" in part
    ]
    offered = extra["properties"]["thresholdSeconds"]["enum"]
    assert offered == list(gateway.LATENCY._upper_bounds[:-1])


def _bucket_labels(histogram: prometheus_client.Histogram) -> set[str]:
    """The `le` values a histogram's buckets are exposed with (30 as "30.0"), read from an
    unregistered histogram with the same buckets."""
    probe = prometheus_client.Histogram(
        "probe_seconds", "Probe.", buckets=histogram._upper_bounds, registry=None
    )
    (family,) = probe.collect()
    return {s.labels["le"] for s in family.samples if s.name.endswith("_bucket")}


def test_label_values_in_alerts_are_ones_the_code_emits(alerts: list[dict[str, Any]]) -> None:
    """A matcher on a value the code never writes would silently match nothing."""
    emitted = {
        ("tunewire_train_failures_total", "reason"): set(training_pb2.FailureReason.keys()),
        ("tunewire_evaluate_decisions_total", "decision"): set(typing.get_args(registry.Decision)),
        ("tunewire_serve_request_seconds_bucket", "le"): _bucket_labels(gateway.LATENCY),
    }
    matched = 0
    for rule in alerts:
        for metric, matchers in re.findall(r"(tunewire_\w+)\{([^}]*)\}", rule["expr"]):
            for label, value in re.findall(r'(\w+)!?="([^"]*)"', matchers):
                if (metric, label) in emitted:
                    assert value in emitted[metric, label], (rule["alert"], label, value)
                    matched += 1
    assert matched >= 6


def test_training_alerts_split_failures_by_cause(alerts: list[dict[str, Any]]) -> None:
    """A run that waited too long for a GPU pages once, as TunewireTrainingPendingNoGPU."""
    rules = {rule["alert"]: rule["expr"] for rule in alerts}
    assert 'reason!="FAILURE_REASON_UNSCHEDULABLE"' in rules["TunewireTrainingFailures"]
    pending = rules["TunewireTrainingPendingNoGPU"]
    assert 'reason="FAILURE_REASON_UNSCHEDULABLE"' in pending
    assert "tunewire_train_runs_queued" in pending and "tunewire_train_runs_running" in pending
    assert 'decision="rejected"' in rules["TunewireGateRejectionsSpiking"]
