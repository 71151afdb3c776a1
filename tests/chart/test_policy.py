"""Policies every rendered object must follow, for the default and production-like values.

Restricted pod security, resources and probes on every container, pinned images, immutable
selectors limited to name/instance/component, the standard labels, Kubernetes API access only
for the controllers (train, evaluate) and only over their own Jobs, and a default-deny network
with narrow allows. serve's pod also runs vLLM: the same rules hold for it, as its own
non-root user (the image's), probed through its loopback.
"""

from __future__ import annotations

from typing import Any

from tests.chart import render
from tests.support.chart import named, of_kind, service_container

SELECTOR_KEYS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
}
STANDARD_LABELS = SELECTOR_KEYS | {
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
WORKLOAD_KINDS = {"Deployment", "Pod"}
CONTROLLERS = {"tunewire-train", "tunewire-evaluate"}
#: The UID of tunewire's own containers (images/*/Dockerfile), and of vLLM's image user.
TUNEWIRE_USER = 10001
VLLM_USER = 2000
#: Where vLLM may write: its HOME, /tmp, the model cache and shared memory, all volumes.
VLLM_WRITABLE = {"/home/vllm", "/tmp", "/models", "/dev/shm"}
#: The only rules a controller's Role may hold: its Jobs, and its Jobs' pods (no logs).
JOB_RULES = [
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
]


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every Deployment and bare Pod (the helm-test pods)."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((obj["metadata"]["name"], obj["spec"]))
    return specs


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, pod spec, container) of every container, init containers included."""
    return [
        (f"{name}/{c['name']}", spec, c)
        for name, spec in _pod_specs(objects)
        for c in spec.get("initContainers", []) + spec["containers"]
    ]


def test_every_container_has_requests_and_a_memory_limit(rendered: list[dict[str, Any]]) -> None:
    for name, _, container in _containers(rendered):
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
        assert "memory" in resources.get("limits", {}), name


def test_every_service_container_has_liveness_and_readiness_probes(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = of_kind(rendered, "Deployment")
    assert deployments
    for deployment in deployments:
        container = service_container(deployment)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["port"] == "http"
        others = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c != container]
        for other in others:
            # vLLM listens on the pod's loopback, where HTTP probes (sent to the pod IP)
            # cannot reach: its probes run in the container and call its /health.
            assert other["name"] == "vllm", deployment["metadata"]["name"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                command = other[kind]["exec"]["command"]
                assert command[:2] == ["python3", "-c"], kind
                assert "'http://127.0.0.1:8000/health'" in command[2], kind
                assert f"timeout={other[kind]['timeoutSeconds']})" in command[2], kind


def test_every_container_runs_restricted(rendered: list[dict[str, Any]]) -> None:
    for name, pod, container in _containers(rendered):
        pod_ctx = pod.get("securityContext", {})
        ctx = container.get("securityContext", {})
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
        user = VLLM_USER if container["name"] == "vllm" else TUNEWIRE_USER
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser")) == user, name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("privileged", False) is False, name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not ctx.get("capabilities", {}).get("add"), name
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", name
        assert pod.get("hostNetwork", False) is False and pod.get("hostPID", False) is False


def test_every_image_is_pinned(rendered: list[dict[str, Any]]) -> None:
    for name, _, container in _containers(rendered):
        image: str = container["image"]
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"


def test_the_service_image_defaults_to_the_app_version(
    default_objects: list[dict[str, Any]],
) -> None:
    for deployment in of_kind(default_objects, "Deployment"):
        container = service_container(deployment)
        assert container["image"] == "ghcr.io/tunewire/control-plane:0.1.0"
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert container["args"] == [component]


def test_only_the_controllers_see_a_kubernetes_api_token(rendered: list[dict[str, Any]]) -> None:
    for name, pod in _pod_specs(rendered):
        assert pod["automountServiceAccountToken"] is (name in CONTROLLERS), name
    for account in of_kind(rendered, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_only_the_controllers_may_manage_jobs_in_their_namespace(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = {o["kind"] for o in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = {r["metadata"]["name"]: r for r in of_kind(rendered, "Role")}
    assert set(roles) == CONTROLLERS
    for role in roles.values():
        assert role["metadata"]["namespace"] == "tunewire"
        assert role["rules"] == JOB_RULES
    bound: dict[str, str] = {}
    for binding in of_kind(rendered, "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": binding["metadata"]["name"],
        }
        (subject,) = binding["subjects"]
        assert (subject["kind"], subject["namespace"]) == ("ServiceAccount", "tunewire")
        bound[subject["name"]] = binding["roleRef"]["name"]
    # Each controller's own account, and nothing else (not the workloads', not `default`).
    accounts = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["serviceAccountName"]
        for d in of_kind(rendered, "Deployment")
    }
    assert bound == {accounts[c]: c for c in CONTROLLERS}
    assert "tunewire-workloads" not in bound and "default" not in bound


def test_selectors_use_only_name_instance_and_component(rendered: list[dict[str, Any]]) -> None:
    selectors: list[tuple[str, dict[str, str]]] = []
    for obj in rendered:
        spec = obj.get("spec", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in {"Deployment", "PodDisruptionBudget", "ServiceMonitor"}:
            selectors.append((where, spec["selector"]["matchLabels"]))
        elif obj["kind"] == "Service":
            selectors.append((where, spec["selector"]))
        elif obj["kind"] == "NetworkPolicy":
            selectors.append((where, spec["podSelector"]["matchLabels"]))
    assert selectors
    for where, labels in selectors:
        assert set(labels) <= SELECTOR_KEYS, where
        # Everything but the release-wide network policies names its component.
        if where not in {"NetworkPolicy/tunewire-default-deny", "NetworkPolicy/tunewire-workloads"}:
            assert set(labels) == SELECTOR_KEYS, where


def test_every_object_and_pod_carries_the_standard_labels(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        assert set(labels) >= STANDARD_LABELS, obj["metadata"]["name"]
        assert labels["app.kubernetes.io/part-of"] == "tunewire"
    for deployment in of_kind(rendered, "Deployment"):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert set(pod_labels) >= STANDARD_LABELS
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_network_is_denied_by_default_and_opened_narrowly(rendered: list[dict[str, Any]]) -> None:
    deny = named(rendered, "NetworkPolicy", "tunewire-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for deployment in of_kind(rendered, "Deployment"):
        name = deployment["metadata"]["name"]
        allow = named(rendered, "NetworkPolicy", name)
        selected = deployment["spec"]["selector"]["matchLabels"]
        assert allow["spec"]["podSelector"]["matchLabels"] == selected
        http_in = allow["spec"]["ingress"][0]
        assert [p["port"] for p in http_in["ports"]] == [8080]
        egress_ports = {p["port"] for rule in allow["spec"]["egress"] for p in rule["ports"]}
        assert 53 in egress_ports and 443 in egress_ports
        assert egress_ports & {9092, 9093, 9094, 9096}
        # Beyond DNS, Kafka and S3, only the controllers get a rule (the Kubernetes API),
        # evaluate one to label and one to train (the console's overview: test_console.py),
        # and serve one while vLLM downloads its model (the Hugging Face hub).
        _, _, _, *more = allow["spec"]["egress"]
        hub = [
            e for e in deployment["spec"]["template"]["spec"]["containers"] if e["name"] == "vllm"
        ]
        hub_enabled = bool(hub) and not any(e["name"] == "HF_HUB_OFFLINE" for e in hub[0]["env"])
        if name in CONTROLLERS:
            rule, *console = more
            assert {p["port"] for p in rule["ports"]} <= {443, 6443}, name
            assert len(console) == (2 if name == "tunewire-evaluate" else 0), name
        elif hub_enabled:
            (rule,) = more
            assert [p["port"] for p in rule["ports"]] == [443], name
        else:
            assert more == [], name


def test_workload_pods_reach_only_dns_kafka_and_s3(rendered: list[dict[str, Any]]) -> None:
    """The Job pods carry the release's labels and the launcher's: their own policy selects
    them by those, lets nothing in, and lets them out only to DNS, Kafka and S3."""
    policy = named(rendered, "NetworkPolicy", "tunewire-workloads")
    selector = policy["spec"]["podSelector"]
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": "tunewire",
        "app.kubernetes.io/instance": "tunewire",
    }
    assert selector["matchExpressions"] == [
        {"key": "tunewire.io/workload", "operator": "In", "values": ["train", "evaluate"]}
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"]
    dns, kafka, s3 = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    service = named(rendered, "NetworkPolicy", "tunewire-ingest")["spec"]["egress"]
    assert [dns, kafka, s3] == service[:3]


def test_production_kafka_egress_is_limited_to_the_brokers(
    production_objects: list[dict[str, Any]],
) -> None:
    allow = named(production_objects, "NetworkPolicy", "tunewire-ingest")
    (kafka,) = [
        r for r in allow["spec"]["egress"] if r["ports"] == [{"port": 9096, "protocol": "TCP"}]
    ]
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    sources = allow["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ticketing"}}} in (
        sources
    )


def test_only_bounded_volumes_are_writable(rendered: list[dict[str, Any]]) -> None:
    """The root filesystems are read-only: the services write to /tmp (and serve to its
    adapters), vLLM to its HOME, /tmp, model cache and shared memory; each is an emptyDir with
    a size limit, or the model cache's claim."""
    for deployment in of_kind(rendered, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
            paths = {m["mountPath"] for m in writable}
            if container["name"] == "vllm":
                assert paths <= VLLM_WRITABLE, paths
            elif container["name"] == "serve":
                assert paths == {"/tmp", "/var/lib/tunewire/adapters"}
            else:
                assert paths == {"/tmp"}, container["name"]
            for mount in writable:
                volume = volumes[mount["name"]]
                if "persistentVolumeClaim" in volume:
                    assert mount["mountPath"] == "/models"
                    continue
                assert volume["emptyDir"]["sizeLimit"], mount


def test_disruption_budgets_match_their_deployments(rendered: list[dict[str, Any]]) -> None:
    for deployment in of_kind(rendered, "Deployment"):
        pdb = named(rendered, "PodDisruptionBudget", deployment["metadata"]["name"])
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        assert pdb["spec"]["maxUnavailable"] == 1


def test_hooks_are_only_helm_tests(rendered: list[dict[str, Any]]) -> None:
    hooks = [o for o in rendered if render.is_hook(o)]
    assert hooks
    assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hooks} == {"test"}
    assert {o["kind"] for o in hooks} <= WORKLOAD_KINDS | {"NetworkPolicy"}
