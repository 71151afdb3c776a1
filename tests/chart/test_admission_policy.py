"""The optional ValidatingAdmissionPolicy that holds train's and evaluate's Jobs to the launcher's.

A controller's Role may create any Job in the namespace; with workloads.admissionPolicy on, the
API server refuses those that run another image or service account, a privileged container or
a hostPath volume. The policy's CEL is evaluated here with cel-python against the Job the real
launcher builds from the rendered settings (test_workloads' path), so a launcher or chart
change that the policy would refuse in a cluster fails here first.
"""

from __future__ import annotations

import collections.abc
import copy
from typing import Any

import celpy
import helm_python
import kubernetes_validate
import pytest
from celpy import celtypes

from tests.chart import render
from tests.chart.test_workloads import _job
from tests.support.chart import of_kind
from tunewire.core.launchers import launching

KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
CONTROLLERS: tuple[launching.WorkloadKind, ...] = ("train", "evaluate")
ATTACKER_IMAGE = "docker.io/library/busybox:1.37"


def _enabled(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """``values`` with the policy on."""
    values = copy.deepcopy(values or {})
    values.setdefault("workloads", {})["admissionPolicy"] = {"enabled": True}
    return values


def _policy(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The release's one policy and its one binding."""
    (policy,) = of_kind(objects, KINDS[0])
    (binding,) = of_kind(objects, KINDS[1])
    return policy, binding


def _evaluate(expression: str, activation: collections.abc.Mapping[str, Any]) -> Any:
    """One CEL expression's value; an evaluation error raises, as failurePolicy Fail denies."""
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate(activation)


def _refusals(policy: dict[str, Any], job: dict[str, Any], user: str) -> list[str] | None:
    """The messages the API server refuses ``user``'s creation of ``job`` with (empty: admitted);
    None when the policy does not apply to the request (a matchCondition is false)."""
    spec = policy["spec"]
    request = {"operation": "CREATE", "userInfo": {"username": user}}
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(job),
        "request": celpy.json_to_cel(request),
    }
    if not all(_evaluate(c["expression"], activation) for c in spec["matchConditions"]):
        return None
    variables = celtypes.MapType()
    activation["variables"] = variables
    for variable in spec["variables"]:
        variables[celtypes.StringType(variable["name"])] = _evaluate(
            variable["expression"], activation
        )
    return [v["message"] for v in spec["validations"] if not _evaluate(v["expression"], activation)]


def test_the_policy_is_off_by_default(rendered: list[dict[str, Any]]) -> None:
    assert not [o for o in rendered if o["kind"] in KINDS]


def test_the_policy_validates_and_binds_to_the_release_namespace_only() -> None:
    policy, binding = _policy(render.objects(render.render(_enabled())))
    for obj in (policy, binding):
        kubernetes_validate.validate(obj, render.KUBE_VERSION, strict=True)
        # Cluster-scoped: the namespace and the release's full name keep releases apart.
        assert "namespace" not in obj["metadata"]
        assert obj["metadata"]["name"] == "tunewire.tunewire-workloads"
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    # 422, which the launcher reports as a wrong Job (the run stays queued), not missing RBAC.
    assert {v["reason"] for v in spec["validations"]} == {"Invalid"}
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["batch"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["jobs"],
        }
    ]
    assert binding["spec"] == {
        "policyName": "tunewire.tunewire-workloads",
        "validationActions": ["Deny"],
        "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tunewire"}}
        },
    }
    report = helm_python.lint(
        render.CHART,
        render.with_plaintext_consent(_enabled()),
        strict=True,
        namespace="tunewire",
        kube_version=f"v{render.KUBE_VERSION}",
    )
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    other = render.objects(render.render(_enabled(), namespace="staging"))
    assert {o["metadata"]["name"] for o in other if o["kind"] in KINDS} == {
        "staging.tunewire-workloads"
    }


@pytest.mark.parametrize("values_file", [None, "values-production.yaml"])
@pytest.mark.parametrize("kind", CONTROLLERS)
def test_the_launched_jobs_are_admitted(
    values_file: str | None,
    kind: launching.WorkloadKind,
    production_values: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render.objects(render.render(_enabled(production_values if values_file else None)))
    policy, binding = _policy(objects)
    job = _job(objects, kind, monkeypatch)
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": job["metadata"]["namespace"]}
    assert _refusals(policy, job, f"system:serviceaccount:tunewire:tunewire-{kind}") == []


def _another_image(pod: dict[str, Any]) -> None:
    pod["containers"][0]["image"] = ATTACKER_IMAGE


def _an_init_container(pod: dict[str, Any]) -> None:
    pod["initContainers"] = [{"name": "setup", "image": ATTACKER_IMAGE}]


def _the_controllers_account(pod: dict[str, Any]) -> None:
    pod["serviceAccountName"] = "tunewire-train"  # the one with the Role


def _the_default_account(pod: dict[str, Any]) -> None:
    del pod["serviceAccountName"]


def _privileged(pod: dict[str, Any]) -> None:
    pod["containers"][0]["securityContext"]["privileged"] = True


def _the_host_root(pod: dict[str, Any]) -> None:
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_another_image, "must run the trainer image ghcr.io/tunewire/trainer:0.1.0"),
        (_an_init_container, "must run the trainer image ghcr.io/tunewire/trainer:0.1.0"),
        (_the_controllers_account, "must run as the service account tunewire-workloads"),
        (_the_default_account, "must run as the service account tunewire-workloads"),
        (_privileged, "may be privileged"),
        (_the_host_root, "hostPath"),
    ],
)
@pytest.mark.parametrize("kind", CONTROLLERS)
def test_any_other_job_is_refused(
    change: collections.abc.Callable[[dict[str, Any]], None],
    reason: str,
    kind: launching.WorkloadKind,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = render.objects(render.render(_enabled()))
    policy, _ = _policy(objects)
    job = _job(objects, kind, monkeypatch)
    change(job["spec"]["template"]["spec"])
    refusals = _refusals(policy, job, f"system:serviceaccount:tunewire:tunewire-{kind}")
    assert refusals is not None and len(refusals) == 1
    assert reason in refusals[0]


@pytest.mark.parametrize(
    "user",
    [
        "system:serviceaccount:tunewire:tunewire-serve",
        "system:serviceaccount:staging:tunewire-train",
        "system:serviceaccount:tunewire:tunewire-workloads",
        "ops@example.com",
    ],
)
def test_requests_of_anyone_else_are_not_matched(
    user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render.objects(render.render(_enabled()))
    policy, _ = _policy(objects)
    job = _job(objects, "train", monkeypatch)
    _another_image(job["spec"]["template"]["spec"])
    assert _refusals(policy, job, user) is None


def test_the_policy_follows_the_images_and_accounts_of_the_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "evaluate": {"enabled": False},
        "train": {"serviceAccount": {"create": False, "name": "ml-train"}},
        "workloads": {
            "image": {"registry": "gpu.example.com", "tag": "0.2.0-cuda12"},
            "serviceAccount": {"create": False, "name": "ml-jobs"},
        },
    }
    objects = render.objects(render.render(_enabled(values), release="blue", namespace="ml"))
    policy, binding = _policy(objects)
    assert (
        policy["metadata"]["name"] == binding["spec"]["policyName"] == "ml.blue-tunewire-workloads"
    )
    job = _job(objects, "train", monkeypatch, fullname="blue-tunewire")
    assert _refusals(policy, job, "system:serviceaccount:ml:ml-train") == []
    # evaluate is off: its account launches nothing, so the policy does not look at it.
    assert _refusals(policy, job, "system:serviceaccount:ml:blue-tunewire-evaluate") is None
    _another_image(job["spec"]["template"]["spec"])
    assert _refusals(policy, job, "system:serviceaccount:ml:ml-train") == [
        "every container of the Job must run the trainer image "
        "gpu.example.com/tunewire/trainer:0.2.0-cuda12"
    ]


def test_nothing_is_rendered_without_a_controller() -> None:
    values = _enabled({"train": {"enabled": False}, "evaluate": {"enabled": False}})
    assert not [o for o in render.objects(render.render(values)) if o["kind"] in KINDS]


def test_the_validation_actions_reach_the_binding_and_are_checked() -> None:
    values = _enabled()
    values["workloads"]["admissionPolicy"]["validationActions"] = ["Warn", "Audit"]
    _, binding = _policy(render.objects(render.render(values)))
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    for wrong in (["Deny", "Warn"], ["Block"], []):
        values["workloads"]["admissionPolicy"]["validationActions"] = wrong
        with pytest.raises(helm_python.HelmValuesError) as refused:
            render.render(values)
        assert "/workloads/admissionPolicy/validationActions" in str(refused.value)
