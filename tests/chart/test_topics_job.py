"""The hook Job that runs ``tunewire topics`` before each install and upgrade
(``global.kafka.topics``): off by default; when on, a valid Job with the values in its
arguments, the services' Kafka settings in its environment, restricted like every pod, and a
NetworkPolicy of its own that lets it reach Kafka."""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from tests.chart import render
from tests.support.chart import (
    SECRET_VALUES,
    field_exists,
    load_values,
    named,
    of_kind,
    service_container,
    settings_from,
)
from tunewire import cli
from tunewire.core.base import settings

ON: dict[str, Any] = {"global": {"kafka": {"topics": {"create": True}}}}


def _production_with_topics() -> dict[str, Any]:
    values = copy.deepcopy(load_values("values-production.yaml"))
    values["global"]["kafka"]["topics"] = {"create": True}
    return values


def _topics_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"]["name"] == "tunewire-topics"]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _job_env(job: dict[str, Any]) -> dict[str, str]:
    """The Job's environment, its Secrets filled with the fakes of the chart tests."""
    env: dict[str, str] = {}
    for item in _container(job)["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            key = item["valueFrom"]["secretKeyRef"]["key"]
            env[item["name"]] = SECRET_VALUES[key]
    return env


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy's pod selector matches pods with ``labels``."""
    selector = policy["spec"]["podSelector"]
    return selector.get("matchLabels", {}).items() <= labels.items() and all(
        labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


def test_off_by_default(
    default_objects: list[dict[str, Any]], production_objects: list[dict[str, Any]]
) -> None:
    for objects in (default_objects, production_objects):
        assert not _topics_objects(objects)
        assert not of_kind(objects, "Job")


@pytest.mark.parametrize("values", [ON, _production_with_topics()], ids=["default", "production"])
def test_the_hook_job_validates_and_runs_restricted(values: dict[str, Any]) -> None:
    objects = render.objects(render.render(values))
    for obj in _topics_objects(objects):
        kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
    job = named(objects, "Job", "tunewire-topics")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["restartPolicy"] == "Never"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    # The services' image, pull secrets and security contexts (restricted).
    service = named(objects, "Deployment", "tunewire-ingest")["spec"]["template"]["spec"]
    ingest = service_container(named(objects, "Deployment", "tunewire-ingest"))
    assert container["image"] == ingest["image"]
    assert pod.get("imagePullSecrets") == service.get("imagePullSecrets")
    assert pod["securityContext"] == service["securityContext"]
    assert container["securityContext"] == ingest["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        ({"create": True}, (12, 3, 168)),
        (
            {
                "create": True,
                "partitions": 6,
                "replicationFactor": 2,
                "deadLetterRetentionHours": 72,
            },
            (6, 2, 72),
        ),
    ],
    ids=["defaults", "set"],
)
def test_the_values_reach_the_commands_arguments(
    topics: dict[str, Any], expected: tuple[int, int, int]
) -> None:
    objects = render.objects(render.render({"global": {"kafka": {"topics": topics}}}))
    args = _container(named(objects, "Job", "tunewire-topics"))["args"]
    parsed = cli.build_parser().parse_args(args)
    assert parsed.func is cli.cmd_topics
    assert (parsed.partitions, parsed.replication_factor, parsed.dlq_retention_hours) == expected


def test_the_production_job_reaches_sasl_kafka_with_the_services_ca(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render.objects(render.render(_production_with_topics()))
    job = named(objects, "Job", "tunewire-topics")
    env = _job_env(job)
    assert [name for name in env if not field_exists(settings.WorkloadSettings, name)] == []
    built = settings_from(env, settings.WorkloadSettings, monkeypatch)
    assert built.kafka.security_protocol == "SASL_SSL"
    assert built.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert built.kafka.sasl_username == "tunewire"
    assert built.kafka.sasl_password is not None
    assert built.kafka.sasl_password.get_secret_value() == "kafka-password"
    # The same brokers, credentials and CA file as a service's pod, and the file is mounted.
    ingest = named(objects, "ConfigMap", "tunewire-ingest")["data"]
    assert env["TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS"] == ingest["TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS"]
    assert built.kafka.ssl_cafile == ingest["TUNEWIRE_KAFKA__SSL_CAFILE"]
    (mount,) = _container(job)["volumeMounts"]
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    assert (mount["name"], volume["name"]) == ("kafka-ca", "kafka-ca")
    assert built.kafka.ssl_cafile == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert volume["secret"]["secretName"] == "tunewire-kafka-ca"


def test_the_default_job_builds_settings_with_the_plaintext_consent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = named(render.objects(render.render(ON)), "Job", "tunewire-topics")
    assert "volumes" not in job["spec"]["template"]["spec"]
    built = settings_from(_job_env(job), settings.WorkloadSettings, monkeypatch)
    assert built.environment is settings.Environment.PRODUCTION
    assert (built.kafka.security_protocol, built.kafka.allow_plaintext) == ("PLAINTEXT", True)
    assert built.kafka.sasl_mechanism is None and built.kafka.ssl_cafile is None


@pytest.mark.parametrize("values", [ON, _production_with_topics()], ids=["default", "production"])
def test_only_the_hooks_own_policy_lets_the_job_reach_dns_and_kafka(values: dict[str, Any]) -> None:
    objects = render.objects(render.render(values))
    job = named(objects, "Job", "tunewire-topics")
    policy = named(objects, "NetworkPolicy", "tunewire-topics")
    labels = job["spec"]["template"]["metadata"]["labels"]
    selecting = {
        p["metadata"]["name"] for p in of_kind(objects, "NetworkPolicy") if _selects(p, labels)
    }
    assert selecting == {"tunewire-default-deny", "tunewire-topics"}
    # Created before the Job, and gone with it.
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(policy["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"].get("helm.sh/hook-weight", "0")
    )
    # Nothing in; out the services' first two rules, DNS and Kafka, and nothing else.
    service = named(objects, "NetworkPolicy", "tunewire-ingest")["spec"]
    assert policy["spec"]["egress"] == service["egress"][:2]
    assert {p["port"] for p in policy["spec"]["egress"][0]["ports"]} == {53}
    assert "ingress" not in policy["spec"]


def test_without_network_policies_the_job_has_none() -> None:
    values = copy.deepcopy(ON)
    values["global"]["networkPolicy"] = {"enabled": False}
    objects = render.objects(render.render(values))
    assert named(objects, "Job", "tunewire-topics")
    assert not of_kind(objects, "NetworkPolicy")


def test_lint_is_clean_with_the_job() -> None:
    for values in (render.with_plaintext_consent(ON), _production_with_topics()):
        report = helm_python.lint(
            render.CHART, values, strict=True, namespace="tunewire", kube_version="v1.31.0"
        )
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == []


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        ({"partitions": 0}, "at '/global/kafka/topics/partitions'"),
        ({"replicationFactor": "3"}, "at '/global/kafka/topics/replicationFactor'"),
        ({"deadLetterRetentionHours": 0}, "at '/global/kafka/topics/deadLetterRetentionHours'"),
        ({"create": "yes"}, "at '/global/kafka/topics/create'"),
        ({"retentionHours": 24}, "additional properties 'retentionHours'"),
    ],
)
def test_wrong_topic_values_are_refused(topics: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render.render({"global": {"kafka": {"topics": topics}}})
    assert expected in str(refused.value)
