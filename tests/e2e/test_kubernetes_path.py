"""The production path without a cluster: train and evaluate create real ``batch/v1`` Jobs
through the official client against a Kubernetes API emulator, and a test kubelet runs each
Job's container command (the real trainer and evaluator) with the environment the Job names
(a ConfigMap and a Secret read back through the API).

A separate embedded stack (its own broker and bucket) keeps these services apart from the
session's local-launcher ones.
"""

from __future__ import annotations

import base64
import collections.abc
import uuid
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client as k8s
import pytest

from tests.support import datasets, kafka_io, kube, waiting
from tunewire import samples
from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import settings, store
from tunewire.core.bus import topics
from tunewire.stack import embedded, processes
from tunewire.train import runs

pytestmark = pytest.mark.stack

TOKEN = "k8s-test-" + uuid.uuid4().hex
CONFIG_MAP = "tunewire-workloads"
SECRET = "tunewire-workload-credentials"
OOM_OBJECTIVE = "k8s-oom"
PREEMPTED_OBJECTIVE = "k8s-preempted"


def _simulated_failure(job: k8s.V1Job) -> str:
    """Failures only a cluster produces, for the Jobs of two objectives."""
    objective = (job.metadata.labels or {}).get("tunewire.io/objective", "")
    if job.metadata.name.startswith("tw-train-") and objective == OOM_OBJECTIVE:
        return "oom"
    if job.metadata.name.startswith("tw-train-") and objective == PREEMPTED_OBJECTIVE:
        return "preempted-after-checkpoint"
    return ""


class Cluster:
    """The emulated cluster, its kubelet and the stack whose services use them."""

    def __init__(
        self, cluster: kube.KubeCluster, stack: embedded.EmbeddedStack, api: k8s.ApiClient
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.batch = k8s.BatchV1Api(api)
        self.artifacts = store.ArtifactStore(
            settings.S3Settings(bucket=stack.bucket, endpoint_url=stack.s3_endpoint_url)
        )

    def client(self, service: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.service_urls[service],
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    def jobs(self) -> list[k8s.V1Job]:
        return list(self.batch.list_namespaced_job(self.cluster.namespace).items)


@pytest.fixture(scope="module")
def k8s_stack(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> collections.abc.Iterator[Cluster]:
    root = tmp_path_factory.mktemp("k8s")
    with kube.KubeCluster() as cluster:
        kubeconfig = _write_kubeconfig(root / "kubeconfig", cluster)
        launcher_env = {
            "KUBECONFIG": str(kubeconfig),
            "TUNEWIRE_LAUNCHER__KIND": "kubernetes",
            "TUNEWIRE_LAUNCHER__KUBERNETES__IN_CLUSTER": "false",
            "TUNEWIRE_LAUNCHER__KUBERNETES__NAMESPACE": cluster.namespace,
            "TUNEWIRE_LAUNCHER__KUBERNETES__CONFIG_MAP": CONFIG_MAP,
            "TUNEWIRE_LAUNCHER__KUBERNETES__SECRET": SECRET,
            "TUNEWIRE_LAUNCHER__KUBERNETES__PENDING_TIMEOUT_S": "5",
            "TUNEWIRE_LAUNCHER__KUBERNETES__BACKOFF_LIMIT": "1",
        }
        stack = embedded.EmbeddedStack(root / "stack", api_tokens=[TOKEN])
        stack.up(
            [
                processes.ServiceSpec(
                    name="train",
                    module="tunewire.train",
                    env={**launcher_env, "TUNEWIRE_TRAIN__RECONCILE_EVERY_S": "2"},
                ),
                processes.ServiceSpec(
                    name="evaluate",
                    module="tunewire.evaluate",
                    env={**launcher_env, "TUNEWIRE_EVALUATE__RECONCILE_EVERY_S": "2"},
                ),
            ]
        )
        try:
            for key, value in stack.service_env(0).items():
                if key.startswith("AWS_"):
                    monkeypatch_module.setenv(key, value)
            with cluster.api_client() as api:
                _workload_settings(cluster, stack, api)
                with kube.Kubelet(cluster, workdir=root / "pods", simulate=_simulated_failure):
                    yield Cluster(cluster, stack, api)
        finally:
            stack.down(snapshot=False)


@pytest.fixture(scope="module")
def monkeypatch_module() -> collections.abc.Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _write_kubeconfig(path: Path, cluster: kube.KubeCluster) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: emulator\n"
        f"clusters: [{{name: emulator, cluster: {{server: '{cluster.url}'}}}}]\n"
        "users: [{name: emulator, user: {}}]\n"
        "contexts: [{name: emulator, context: {cluster: emulator, user: emulator}}]\n"
    )
    return path


def _workload_settings(
    cluster: kube.KubeCluster, stack: embedded.EmbeddedStack, api: k8s.ApiClient
) -> None:
    """What the chart's ConfigMap and Secret give the Job pods: non-secret settings in one,
    credentials in the other."""
    service_env = stack.service_env(0)
    plain = {
        key: value
        for key, value in service_env.items()
        if key.startswith(("TUNEWIRE_KAFKA__", "TUNEWIRE_S3__", "TUNEWIRE_TRAINER__"))
        or key in ("TUNEWIRE_ENVIRONMENT", "AWS_DEFAULT_REGION")
    }
    plain["TUNEWIRE_TRAINER__CHECKPOINT_EVERY_S"] = "0.5"
    secret = {key: value for key, value in service_env.items() if key.startswith("AWS_")}
    core = k8s.CoreV1Api(api)
    core.create_namespaced_config_map(
        cluster.namespace,
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name=CONFIG_MAP, namespace=cluster.namespace), data=plain
        ),
    )
    core.create_namespaced_secret(
        cluster.namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=SECRET, namespace=cluster.namespace),
            data={k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
        ),
    )


def _objective(k8s_stack: Cluster, name: str, **changes: Any) -> int:
    return datasets.register(k8s_stack.artifacts, datasets.quick_objective(name, **changes))


def _events(k8s_stack: Cluster, run_id: str) -> list[training_pb2.TrainingEvent]:
    reader = kafka_io.TopicReader(k8s_stack.stack.bootstrap_servers, topics.TRAINING)
    found: list[training_pb2.TrainingEvent] = []

    def ended(records: list[Any]) -> bool:
        found[:] = [
            e
            for e in (training_pb2.TrainingEvent.FromString(r.value) for r in records)
            if e.run_id == run_id
        ]
        return any(e.WhichOneof("phase") in ("succeeded", "failed", "cancelled") for e in found)

    try:
        reader.read_until(ended, timeout_s=30)
    finally:
        reader.close()
    return found


def test_snapshot_to_champion_through_jobs(k8s_stack: Cluster) -> None:
    name = f"k8s-{uuid.uuid4().hex[:6]}"
    version = _objective(k8s_stack, name, training=samples.support_intent_spec()["training"])
    snapshot = datasets.write_snapshot(
        k8s_stack.artifacts, objective=name, version=version, train=200
    )
    datasets.announce(k8s_stack.stack.bootstrap_servers, snapshot, times=2)
    run_id = runs.run_id_for(name, snapshot.dataset_id)

    with k8s_stack.client("train") as train:
        run = waiting.poll_json(
            train, f"/v1/runs/{name}/{run_id}", lambda r: r["status"] in runs.TERMINAL
        )
    assert run["status"] == "succeeded", run
    assert run["launcher"] == "kubernetes"
    assert run["logs"].startswith("kubectl logs")

    mine = [
        job
        for job in k8s_stack.jobs()
        if (job.metadata.labels or {}).get("tunewire.io/objective") == name
    ]
    train_jobs = [job for job in mine if job.metadata.name.startswith("tw-train-")]
    assert [job.metadata.name for job in train_jobs] == [run["workload"]]  # one, redelivered
    pod = train_jobs[0].spec.template.spec
    assert pod.containers[0].command[:3] == ["python", "-m", "tunewire.workloads.train"]
    assert {ref.config_map_ref.name for ref in pod.containers[0].env_from if ref.config_map_ref}
    assert "AWS_SECRET_ACCESS_KEY" not in str(train_jobs[0].to_dict())

    with k8s_stack.client("evaluate") as evaluate:
        decided = waiting.poll_json(
            evaluate, f"/v1/evaluations/{name}/{run_id}", lambda e: e["decision"]
        )
        assert any(job.metadata.name == decided["workload"] for job in k8s_stack.jobs())
        assert decided["metrics"]["candidate"]["model_ref"] == run_id
        registry = evaluate.get(f"/v1/registry/{name}").json()
    assert decided["decision"] == "approved", decided
    assert registry["champion"] == run_id


def test_a_cancelled_run_deletes_its_job(k8s_stack: Cluster) -> None:
    name = f"k8s-{uuid.uuid4().hex[:6]}"
    version = _objective(k8s_stack, name)
    snapshot = datasets.write_snapshot(k8s_stack.artifacts, objective=name, version=version)
    with k8s_stack.client("train") as train:
        submitted = train.post(
            "/v1/runs",
            json={
                "objective": name,
                "dataset_id": snapshot.dataset_id,
                "overrides": {"training": {"epochs": 100}},
            },
        )
        assert submitted.status_code == 202, submitted.text
        run_id = submitted.json()["run_id"]
        running = waiting.poll_json(
            train, f"/v1/runs/{name}/{run_id}", lambda r: bool(r["progress"])
        )
        cancelled = train.post(f"/v1/runs/{name}/{run_id}/cancel", json={"reason": "not needed"})
    assert cancelled.json()["status"] == "cancelled"

    def deleted() -> None:
        jobs = [j.metadata.name for j in k8s_stack.jobs()]
        assert running["workload"] not in jobs, "the Job was never deleted"

    waiting.eventually(deleted, timeout_s=10, interval_s=0.2)
    deletes = k8s_stack.cluster.requests("DELETE", "jobs")
    assert {request.params.get("propagationPolicy") for request in deletes} == {"Background"}
    assert [e.WhichOneof("phase") for e in _events(k8s_stack, run_id)][-1] == "cancelled"


def test_an_oom_killed_pod_fails_the_run_with_that_reason(k8s_stack: Cluster) -> None:
    version = _objective(k8s_stack, OOM_OBJECTIVE)
    snapshot = datasets.write_snapshot(
        k8s_stack.artifacts, objective=OOM_OBJECTIVE, version=version, train=40
    )
    datasets.announce(k8s_stack.stack.bootstrap_servers, snapshot)
    run_id = runs.run_id_for(OOM_OBJECTIVE, snapshot.dataset_id)
    with k8s_stack.client("train") as train:
        run = waiting.poll_json(
            train, f"/v1/runs/{OOM_OBJECTIVE}/{run_id}", lambda r: r["status"] in runs.TERMINAL
        )
    assert run["status"] == "failed"
    assert run["failure_reason"] == "FAILURE_REASON_OUT_OF_MEMORY"
    assert run["attempt"] == 1  # a user's problem: not retried
    failed = [e for e in _events(k8s_stack, run_id) if e.HasField("failed")]
    assert {e.failed.reason for e in failed} == {training_pb2.FAILURE_REASON_OUT_OF_MEMORY}


def test_a_preempted_pod_resumes_from_its_checkpoint(k8s_stack: Cluster) -> None:
    version = _objective(
        k8s_stack,
        PREEMPTED_OBJECTIVE,
        training={"epochs": 6, "lr": 0.003, "batch_size": 8, "max_seq_len": 96, "gpu": 0},
    )
    snapshot = datasets.write_snapshot(
        k8s_stack.artifacts, objective=PREEMPTED_OBJECTIVE, version=version
    )
    datasets.announce(k8s_stack.stack.bootstrap_servers, snapshot)
    run_id = runs.run_id_for(PREEMPTED_OBJECTIVE, snapshot.dataset_id)
    with k8s_stack.client("train") as train:
        run = waiting.poll_json(
            train,
            f"/v1/runs/{PREEMPTED_OBJECTIVE}/{run_id}",
            lambda r: r["status"] in runs.TERMINAL,
        )
    assert run["status"] == "succeeded", run
    started = [e.started for e in _events(k8s_stack, run_id) if e.HasField("started")]
    assert len(started) == 2
    assert started[0].resumed_from_step == 0
    assert started[1].resumed_from_step > 0


def test_a_job_deleted_by_hand_fails_its_run_as_cancelled_outside(k8s_stack: Cluster) -> None:
    name = f"k8s-{uuid.uuid4().hex[:6]}"
    version = _objective(k8s_stack, name)
    snapshot = datasets.write_snapshot(k8s_stack.artifacts, objective=name, version=version)
    with k8s_stack.client("train") as train:
        submitted = train.post(
            "/v1/runs",
            json={
                "objective": name,
                "dataset_id": snapshot.dataset_id,
                "overrides": {"training": {"epochs": 100}},
            },
        )
        run_id = submitted.json()["run_id"]
        running = waiting.poll_json(
            train, f"/v1/runs/{name}/{run_id}", lambda r: r["status"] == "running"
        )
        k8s_stack.batch.delete_namespaced_job(
            running["workload"], k8s_stack.cluster.namespace, propagation_policy="Background"
        )
        run = waiting.poll_json(
            train, f"/v1/runs/{name}/{run_id}", lambda r: r["status"] in runs.TERMINAL
        )
    assert run["status"] == "failed"
    assert run["failure_reason"] == "FAILURE_REASON_CANCELLED_BY_USER"
    assert "outside tunewire" in run["message"]
