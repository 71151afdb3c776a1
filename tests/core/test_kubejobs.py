"""The Kubernetes launcher, end to end without a cluster.

The launcher talks to kmock's API emulator over HTTP with the official client; the test
kubelet (tests/support/kube.py) runs each Job's container command as a local process and
writes pod and Job status back, so create → watch → succeed/fail → cancel all really happen.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes_validate
import prometheus_client
import pydantic
import pytest
from kubernetes import client as k8s

from tests.support import fake_workload, kube
from tests.support.waiting import eventually
from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors
from tunewire.core.launchers import factory, kubejobs, launching

REPO = Path(__file__).resolve().parents[2]
KUBE_VERSION = "1.31.0"
SECRET_VALUE = "s3cr3t-Pa55w0rd-never-in-a-job"
KAFKA_CA = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0G\n-----END CERTIFICATE-----\n"
Phase = launching.JobPhase


@pytest.fixture
def cluster() -> Iterator[kube.KubeCluster]:
    with kube.KubeCluster(namespace="tunewire") as running:
        core = k8s.CoreV1Api(running.api_client())
        core.create_namespaced_config_map(
            "tunewire",
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name="tunewire-workload"),
                data={"TUNEWIRE_S3__BUCKET": "models-bucket"},
            ),
        )
        core.create_namespaced_secret(
            "tunewire",
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="tunewire-workload-secrets"),
                string_data={"TUNEWIRE_KAFKA__SASL_PASSWORD": SECRET_VALUE},
            ),
        )
        yield running


@pytest.fixture
def kubelet(cluster: kube.KubeCluster, tmp_path: Path) -> Iterator[kube.Kubelet]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    with kube.Kubelet(cluster, workdir=tmp_path / "pods", env=env) as running:
        yield running


def settings(**changes: object) -> launching.KubernetesLauncherSettings:
    base = launching.KubernetesLauncherSettings(
        namespace="tunewire",
        image="ghcr.io/tunewire/trainer:test",
        config_map="tunewire-workload",
        secret="tunewire-workload-secrets",
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=[launching.Toleration(key="nvidia.com/gpu", operator="Exists")],
        priority_class="tunewire-training",
        backoff_limit=0,
        pending_timeout_s=1.0,
        in_cluster=False,
    )
    # model_copy skips validation: the tests use deadlines far below the 60 s a cluster allows.
    return base.model_copy(update=changes)


def make_launcher(
    cluster: kube.KubeCluster,
    *,
    kind: launching.WorkloadKind = "train",
    url: str | None = None,
    **changes: object,
) -> kubejobs.KubernetesLauncher:
    return kubejobs.KubernetesLauncher(
        settings(**changes),
        kind=kind,
        api_client=cluster.api_client(url=url),
        watch_timeout_s=30,
        pending_check_s=0.2,
        retry_backoff_s=0.1,
    )


@pytest.fixture
def launcher(cluster: kube.KubeCluster) -> kubejobs.KubernetesLauncher:
    return make_launcher(cluster)


def spec(
    name: str,
    *args: str,
    kind: launching.WorkloadKind = "train",
    gpus: int = 0,
    simulate: str | None = None,
) -> launching.WorkloadSpec:
    labels = {"tunewire.io/objective": "support-intent", "tunewire.io/run": name[-10:]}
    if simulate:
        labels[kube.SIMULATE_LABEL] = simulate
    return launching.WorkloadSpec(
        name=name,
        kind=kind,
        args=list(args),
        labels=labels,
        gpus=gpus,
        env={"TUNEWIRE_LOG_LEVEL": "DEBUG"},
        module=fake_workload.MODULE,
    )


def wait_status(
    launcher: kubejobs.KubernetesLauncher,
    name: str,
    done: Callable[[launching.JobStatus], bool],
    *,
    timeout_s: float = 15.0,
) -> launching.JobStatus:

    def reached() -> launching.JobStatus:
        status = launcher.status(name)
        assert done(status), f"{name} stayed {status}"
        return status

    return eventually(reached, timeout_s=timeout_s, interval_s=0.05)


def finished(status: launching.JobStatus) -> bool:
    return status.finished


class Watching:
    """A launcher's watch in a thread, recording what it reports."""

    def __init__(self, launcher: kubejobs.KubernetesLauncher) -> None:
        self.seen: list[launching.JobStatus] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=launcher.watch, args=(self.seen.append, self._stop))

    def __enter__(self) -> Watching:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the watch did not stop"

    def of(self, name: str) -> list[launching.JobStatus]:
        return [s for s in list(self.seen) if s.name == name]

    def wait(self, name: str, phase: Phase, *, timeout_s: float = 15.0) -> launching.JobStatus:

        def reported() -> launching.JobStatus:
            found = [s for s in self.of(name) if s.phase is phase]
            assert found, f"no {phase} for {name}: {self.of(name)}"
            return found[-1]

        return eventually(reported, timeout_s=timeout_s, interval_s=0.05)


def reconnects(cause: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "tunewire_launcher_watch_reconnects_total", {"kind": "train", "cause": cause}
    )
    return value or 0.0


def test_the_job_is_valid_restricted_and_free_of_secrets(
    cluster: kube.KubeCluster, launcher: kubejobs.KubernetesLauncher, kubelet: kube.Kubelet
) -> None:
    job_spec = spec(
        "tw-train-manifest",
        "--print-env",
        "TUNEWIRE_S3__BUCKET",
        "TUNEWIRE_KAFKA__SASL_PASSWORD",
        "TUNEWIRE_LOG_LEVEL",
        gpus=2,
    )
    assert launcher.launch(job_spec) is True

    api = cluster.api_client()
    stored = k8s.BatchV1Api(api).read_namespaced_job(job_spec.name, "tunewire")
    job = api.sanitize_for_serialization(stored)
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    assert SECRET_VALUE not in json.dumps(job)

    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "trainer"
    assert labels["app.kubernetes.io/managed-by"] == "tunewire"
    assert labels["tunewire.io/workload"] == "train"
    assert labels["tunewire.io/objective"] == "support-intent"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["spec"]["activeDeadlineSeconds"] == 6 * 3600
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 24 * 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "tunewire-workload"
    assert pod["priorityClassName"] == "tunewire-training"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", fake_workload.MODULE, *job_spec.args]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "2"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["envFrom"] == [
        {"configMapRef": {"name": "tunewire-workload"}},
        {"secretRef": {"name": "tunewire-workload-secrets"}},
    ]
    env = {var["name"]: var["value"] for var in container["env"]}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["HOME"] in mounts
    assert any(env["TUNEWIRE_MODEL_CACHE"].startswith(m + "/") for m in mounts)
    assert env["TUNEWIRE_LOG_LEVEL"] == "DEBUG"
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} == {"tmp", "model-cache"}
    # Without a private Kafka CA the image's system CAs verify the brokers: nothing mounted.
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "model-cache"]
    assert "TUNEWIRE_KAFKA__SSL_CAFILE" not in env

    # The pod gets the settings from the ConfigMap and the Secret, by reference.
    status = wait_status(launcher, job_spec.name, finished)
    assert status.phase is Phase.SUCCEEDED
    assert status.logs == f"kubectl logs -n tunewire job/{job_spec.name}"
    output = kubelet.logs(job_spec.name)
    assert "TUNEWIRE_S3__BUCKET=models-bucket" in output
    assert f"TUNEWIRE_KAFKA__SASL_PASSWORD={SECRET_VALUE}" in output


def test_a_private_kafka_ca_is_mounted_read_only_where_the_settings_look(
    cluster: kube.KubeCluster, kubelet: kube.Kubelet
) -> None:
    k8s.CoreV1Api(cluster.api_client()).create_namespaced_secret(
        "tunewire",
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="kafka-ca"),
            string_data={"bundle.pem": KAFKA_CA, "unrelated": "not for the Jobs"},
        ),
    )
    launcher = make_launcher(cluster, ca_secret="kafka-ca", ca_key="bundle.pem")
    job_spec = spec("tw-train-kafka-ca", "--print-env", "TUNEWIRE_KAFKA__SSL_CAFILE")
    assert launcher.launch(job_spec) is True

    api = cluster.api_client()
    job = api.sanitize_for_serialization(
        k8s.BatchV1Api(api).read_namespaced_job(job_spec.name, "tunewire")
    )
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    assert KAFKA_CA not in json.dumps(job)
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "kafka-ca"
    (item,) = volume["secret"]["items"]
    assert item["key"] == "bundle.pem"
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    env = {var["name"]: var["value"] for var in container["env"]}
    assert env["TUNEWIRE_KAFKA__SSL_CAFILE"] == f"{mount['mountPath']}/{item['path']}"

    # The workload finds the CA, and only it, in the file its Kafka settings name.
    assert wait_status(launcher, job_spec.name, finished).phase is Phase.SUCCEEDED
    (line,) = [
        line
        for line in kubelet.logs(job_spec.name).splitlines()
        if line.startswith("TUNEWIRE_KAFKA__SSL_CAFILE=")
    ]
    cafile = Path(line.partition("=")[2])
    assert cafile.read_text() == KAFKA_CA
    assert [p.name for p in cafile.parent.iterdir()] == [cafile.name]


def test_two_releases_in_one_namespace_leave_each_others_jobs_alone(
    cluster: kube.KubeCluster, kubelet: kube.Kubelet
) -> None:
    blue_labels = {"app.kubernetes.io/name": "tw", "app.kubernetes.io/instance": "blue"}
    blue = make_launcher(cluster, labels=blue_labels)
    green = make_launcher(cluster, labels={"app.kubernetes.io/instance": "green"})
    unlabelled = make_launcher(cluster)
    with Watching(blue) as blue_sees, Watching(green) as green_sees:
        blue.launch(spec("tw-train-blue", "--sleep", "0.3"))
        green.launch(spec("tw-train-green", "--sleep", "0.3"))
        unlabelled.launch(spec("tw-train-unlabelled"))
        blue_sees.wait("tw-train-blue", Phase.SUCCEEDED)
        green_sees.wait("tw-train-green", Phase.SUCCEEDED)
        wait_status(unlabelled, "tw-train-unlabelled", finished)

        # A Job of the same name is the other release's: never followed, adopted or deleted.
        assert green.status("tw-train-blue").phase is Phase.MISSING
        with pytest.raises(errors.Conflict, match="belongs to another launcher"):
            green.launch(spec("tw-train-blue"))
        assert green.cancel("tw-train-blue") is False
        assert blue.status("tw-train-blue").phase is Phase.SUCCEEDED
        # A Job from before the release's labels (an upgrade) is not another release's: it
        # is followed and cancelled by name, though no longer watched.
        assert green.status("tw-train-unlabelled").phase is Phase.SUCCEEDED
        assert green.cancel("tw-train-unlabelled") is True
        # The other release's watch would report these, had it been watching them.
        assert blue.cancel("tw-train-blue") is True
        blue_sees.wait("tw-train-blue", Phase.MISSING)

    assert {s.name for s in blue_sees.seen} == {"tw-train-blue"}
    assert {s.name for s in green_sees.seen} == {"tw-train-green"}
    job = k8s.BatchV1Api(cluster.api_client()).read_namespaced_job("tw-train-green", "tunewire")
    assert job.metadata.labels["app.kubernetes.io/instance"] == "green"
    assert job.metadata.labels["app.kubernetes.io/name"] == "tunewire"
    assert job.spec.template.metadata.labels == job.metadata.labels
    # The release's own name label replaces tunewire's, and the API filters on all of them.
    selectors = {r.params.get("labelSelector") for r in cluster.requests("GET", "jobs")}
    assert (
        "app.kubernetes.io/name=tw,app.kubernetes.io/managed-by=tunewire,"
        "app.kubernetes.io/instance=blue,tunewire.io/workload=train"
    ) in selectors


def test_the_launchers_own_labels_cannot_be_set() -> None:
    with pytest.raises(pydantic.ValidationError, match="set by the launcher itself"):
        launching.KubernetesLauncherSettings(labels={"tunewire.io/workload": "evaluate"})


def test_create_watch_succeed(launcher: kubejobs.KubernetesLauncher, kubelet: kube.Kubelet) -> None:
    with Watching(launcher) as watching:
        launcher.launch(spec("tw-train-ok", "--sleep", "0.5"))
        watching.wait("tw-train-ok", Phase.SUCCEEDED)

    phases = [s.phase for s in watching.of("tw-train-ok")]
    assert phases[-1] is Phase.SUCCEEDED
    assert Phase.RUNNING in phases
    assert len(phases) == len(set(phases)), "a phase was reported twice"


def test_a_failed_exit_is_a_trainer_error_with_its_message(
    cluster: kube.KubeCluster, kubelet: kube.Kubelet
) -> None:
    launcher = make_launcher(cluster, backoff_limit=1)
    launcher.launch(spec("tw-train-bad", "--exit", "3"))

    status = wait_status(launcher, "tw-train-bad", finished)

    assert status.phase is Phase.FAILED
    assert status.reason == training_pb2.FAILURE_REASON_TRAINER_ERROR
    assert status.message == "exit code 3: fake workload failing on purpose with status 3"
    assert len(cluster.requests("POST", "pods")) == 2, "backoffLimit 1 means one retry"


@pytest.mark.parametrize(
    ("simulate", "reason", "shown"),
    [
        ("oom", training_pb2.FAILURE_REASON_OUT_OF_MEMORY, "OOMKilled"),
        ("preempted", training_pb2.FAILURE_REASON_PREEMPTED, "higher priority pod"),
    ],
)
def test_a_pod_killed_from_outside(
    launcher: kubejobs.KubernetesLauncher,
    kubelet: kube.Kubelet,
    simulate: str,
    reason: int,
    shown: str,
) -> None:
    name = f"tw-train-{simulate}"
    launcher.launch(spec(name, "--sleep", "30", simulate=simulate))

    status = wait_status(launcher, name, finished)

    assert status.phase is Phase.FAILED
    assert status.reason == reason
    assert shown in status.message


def test_deadline_exceeded(cluster: kube.KubeCluster, kubelet: kube.Kubelet) -> None:
    launcher = make_launcher(cluster, active_deadline_seconds=1)
    launcher.launch(spec("tw-train-slow", "--sleep", "60"))

    status = wait_status(launcher, "tw-train-slow", finished)

    assert status.phase is Phase.FAILED
    assert status.reason == training_pb2.FAILURE_REASON_DEADLINE_EXCEEDED
    assert "deadline" in status.message
    process = kubelet.process("tw-train-slow")
    assert process is not None and process.poll() is not None


@pytest.mark.parametrize(
    ("simulate", "secret", "reason", "shown"),
    [
        (
            "unschedulable",
            "tunewire-workload-secrets",
            training_pb2.FAILURE_REASON_UNSCHEDULABLE,
            "Insufficient nvidia.com/gpu",
        ),
        (
            "image-pull",
            "tunewire-workload-secrets",
            training_pb2.FAILURE_REASON_IMAGE_PULL,
            "ImagePullBackOff",
        ),
        (
            None,
            "no-such-secret",
            training_pb2.FAILURE_REASON_UNKNOWN,
            'CreateContainerConfigError: secret "no-such-secret" not found',
        ),
    ],
)
def test_a_pod_that_cannot_start_fails_after_the_pending_timeout(
    cluster: kube.KubeCluster,
    kubelet: kube.Kubelet,
    simulate: str | None,
    secret: str,
    reason: int,
    shown: str,
) -> None:
    launcher = make_launcher(cluster, secret=secret)
    name = f"tw-train-{simulate or secret}"
    with Watching(launcher) as watching:
        launcher.launch(spec(name, simulate=simulate))
        failed = watching.wait(name, Phase.FAILED, timeout_s=10)

    first = watching.of(name)[0]
    assert first.phase is Phase.PENDING
    assert failed.reason == reason
    assert shown in failed.message
    assert "pending for more than 1 s" in failed.message
    assert launcher.cancel(name) is True


def test_cancel_deletes_the_job_in_the_background_and_kills_the_process(
    cluster: kube.KubeCluster, launcher: kubejobs.KubernetesLauncher, kubelet: kube.Kubelet
) -> None:
    with Watching(launcher) as watching:
        launcher.launch(spec("tw-train-cancel", "--sleep", "60"))
        watching.wait("tw-train-cancel", Phase.RUNNING)
        process = kubelet.process("tw-train-cancel")
        assert process is not None and process.poll() is None

        assert launcher.cancel("tw-train-cancel") is True

        watching.wait("tw-train-cancel", Phase.MISSING)
    (delete,) = cluster.requests("DELETE", "jobs")
    assert delete.params.get("propagationPolicy") == "Background"
    assert launcher.status("tw-train-cancel").phase is Phase.MISSING
    process.wait(timeout=10)
    assert launcher.cancel("tw-train-cancel") is False


def test_launching_the_same_spec_twice_makes_one_job(
    cluster: kube.KubeCluster, launcher: kubejobs.KubernetesLauncher, kubelet: kube.Kubelet
) -> None:
    job_spec = spec("tw-train-twice")

    assert launcher.launch(job_spec) is True
    assert launcher.launch(job_spec) is False

    wait_status(launcher, job_spec.name, finished)
    jobs = k8s.BatchV1Api(cluster.api_client()).list_namespaced_job("tunewire").items
    assert [job.metadata.name for job in jobs] == [job_spec.name]
    assert len(cluster.requests("POST", "pods")) == 1


def test_watch_catches_up_and_survives_the_stream_ending(
    cluster: kube.KubeCluster, kubelet: kube.Kubelet
) -> None:
    launcher = make_launcher(cluster)
    evaluator = make_launcher(cluster, kind="evaluate")
    launcher.launch(spec("tw-train-early-ok"))
    launcher.launch(spec("tw-train-early-bad", "--exit", "2"))
    evaluator.launch(spec("tw-evaluate-other", kind="evaluate"))
    for name in ("tw-train-early-ok", "tw-train-early-bad"):
        wait_status(launcher, name, finished)
    ended, expired = reconnects("ended"), reconnects("expired")

    with Watching(launcher) as watching:
        # Jobs that finished before the watch started are reported at once.
        assert watching.wait("tw-train-early-ok", Phase.SUCCEEDED, timeout_s=5)
        bad = watching.wait("tw-train-early-bad", Phase.FAILED, timeout_s=5)
        assert bad.reason == training_pb2.FAILURE_REASON_TRAINER_ERROR

        # The server ends the stream (its timeout): the launcher re-lists and watches again.
        cluster.end_watches(expired=False)
        launcher.launch(spec("tw-train-after-end"))
        watching.wait("tw-train-after-end", Phase.SUCCEEDED)

        # The watch expires (410 Gone): the same.
        cluster.end_watches(expired=True)
        launcher.launch(spec("tw-train-after-expiry"))
        watching.wait("tw-train-after-expiry", Phase.SUCCEEDED)

    assert reconnects("ended") > ended
    assert reconnects("expired") > expired
    assert not [s for s in watching.seen if s.name == "tw-evaluate-other"]
    for name in ("tw-train-early-ok", "tw-train-after-end"):
        assert [s.phase for s in watching.of(name)].count(Phase.SUCCEEDED) == 1


def test_watch_reconnects_after_losing_the_api(
    cluster: kube.KubeCluster, kubelet: kube.Kubelet
) -> None:
    endpoint = cluster.endpoint()
    watched = make_launcher(cluster, url=endpoint)
    direct = make_launcher(cluster)
    direct.launch(spec("tw-train-doomed", "--sleep", "60"))
    errors_before = reconnects("error")
    with Watching(watched) as watching:
        watching.wait("tw-train-doomed", Phase.RUNNING)
        cluster.cut(endpoint)
        # While the API is out of the launcher's reach, one Job finishes and one is deleted.
        direct.launch(spec("tw-train-meanwhile"))
        wait_status(direct, "tw-train-meanwhile", finished)
        direct.cancel("tw-train-doomed")
        # The outage lasts until the watch has lost the API, so it must catch up on both.
        eventually(
            lambda: reconnects("error"),
            ready=lambda seen: seen > errors_before,
            timeout_s=15,
            interval_s=0.05,
            what="the watch noticing the API is gone",
        )
        cluster.restore(endpoint)

        watching.wait("tw-train-meanwhile", Phase.SUCCEEDED)
        watching.wait("tw-train-doomed", Phase.MISSING)
    assert reconnects("error") > errors_before


def test_an_unreachable_api_is_a_typed_error(cluster: kube.KubeCluster) -> None:
    launcher = make_launcher(cluster, url="http://127.0.0.1:9")

    with pytest.raises(errors.Unavailable, match="Kubernetes API is unreachable"):
        launcher.launch(spec("tw-train-nowhere"))
    with pytest.raises(errors.Unavailable):
        launcher.status("tw-train-nowhere")


def test_build_outside_a_cluster_says_what_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    chosen = launching.LauncherSettings(kind="kubernetes")

    with pytest.raises(errors.Misconfigured, match="TUNEWIRE_LAUNCHER__KIND=local"):
        factory.build(chosen, kind="train")
