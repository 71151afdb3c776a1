"""The embedded stack with real processes: tansu, moto's server and a stand-in service.

Nothing is mocked: Kafka is exercised with kafka-python through the broker, S3 with boto3 over
HTTP, and process handling by looking at the pids afterwards — the things ``tunewire up``/``down``
and the test fixtures rely on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import kafka
import pytest

from tests.support import fake_workload
from tests.support.waiting import eventually
from tunewire.core.base.principals import Role, token_digest
from tunewire.core.launchers import launching, localjobs
from tunewire.stack import embedded, objectstore, ports, processes
from tunewire.stack.embedded import EmbeddedStack
from tunewire.stack.processes import ServiceSpec

pytestmark = pytest.mark.stack

HERE = Path(__file__).parent
FAST_GROUPS = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}
"""tansu holds a JoinGroup for half the session timeout; kafka-python's default makes it ~25 s."""


def _survivors(started: dict[int, str]) -> dict[int, str]:
    """The processes we started that still run, with what they are.

    A pid is compared with the identity it had when started: on a busy machine with a small
    pid_max, a pid can be handed to an unrelated new process right after ours exits.
    """
    return {
        pid: identity
        for pid, identity in started.items()
        if processes.process_identity(pid) == identity
    }


def _recorded_pids(stack: EmbeddedStack) -> dict[int, str]:
    state = json.loads(stack.state_file.read_text())
    return {int(item["pid"]): item["identity"] for item in state["processes"]}


def _stand_in(name: str, **env: str) -> ServiceSpec:
    return ServiceSpec(name, "healthz_server", 0, {"PYTHONPATH": str(HERE), **env})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(tmp_path_factory.mktemp("stack"), startup_timeout=20) as running:
        yield running


def test_kafka_roundtrip_with_headers(stack: EmbeddedStack) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    headers = [("ce_id", b"id-1"), ("ce_type", b"ticket.created"), ("content-type", b"\x00\xff")]
    producer = kafka.KafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    try:
        producer.send(topic, key=b"support-intent", value=b"hello", headers=headers).get(10)
    finally:
        producer.close()

    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap_servers,
        group_id="test-roundtrip",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUPS,
    )
    try:
        records: list[Any] = []

        def received() -> list[Any]:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            return records

        # The poll itself waits up to half a second for records: no pause between polls.
        eventually(received, ready=bool, timeout_s=15, interval_s=0, what=f"a record on {topic}")
    finally:
        consumer.close()
    assert [(r.key, r.value) for r in records] == [(b"support-intent", b"hello")]
    assert list(records[0].headers) == headers


def test_s3_put_get_and_conditional_write(stack: EmbeddedStack) -> None:
    s3 = stack.s3_client()
    s3.put_object(Bucket=stack.bucket, Key="registry/x.json", Body=b"{}", IfNoneMatch="*")
    assert s3.get_object(Bucket=stack.bucket, Key="registry/x.json")["Body"].read() == b"{}"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=stack.bucket, Key="registry/x.json", Body=b"[]", IfNoneMatch="*")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.close()


def test_state_file_records_urls(stack: EmbeddedStack) -> None:
    state = json.loads(stack.state_file.read_text())
    assert state["broker"]["bootstrap_servers"] == stack.bootstrap_servers
    assert state["s3"]["endpoint_url"] == stack.s3_endpoint_url
    assert {item["name"] for item in state["processes"]} == {"s3", "broker"}
    assert (stack.log_dir / "broker.log").is_file()


def _consume_all(bootstrap_servers: str, topic: str, *, expected: int) -> list[bytes]:
    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUPS,
    )
    values: list[bytes] = []

    def received() -> list[bytes]:
        for batch in consumer.poll(timeout_ms=500).values():
            values.extend(record.value for record in batch)
        return values

    try:
        # The poll itself waits up to half a second for records: no pause between polls.
        eventually(
            received,
            ready=lambda found: len(found) >= expected,
            timeout_s=15,
            interval_s=0,
            what=f"{expected} records on {topic}",
        )
    finally:
        consumer.close()
    return values


def test_objects_and_kafka_survive_down_and_up(tmp_path: Path) -> None:
    tricky = {"a": b"file", "a/b": b"nested", "../escape": b"dots", "dir/": b"", "ü n/i.txt": b"u"}
    with EmbeddedStack(tmp_path, startup_timeout=20, persist_kafka=True) as first:
        s3 = first.s3_client()
        s3.put_object(
            Bucket=first.bucket,
            Key="adapters/x/run-1/card.md",
            Body=b"# card",
            ContentType="text/markdown",
            Metadata={"run-id": "run-1"},
        )
        for key, body in tricky.items():
            s3.put_object(Bucket=first.bucket, Key=key, Body=body)
        s3.close()
        producer = kafka.KafkaProducer(bootstrap_servers=first.bootstrap_servers, acks="all")
        producer.send("test.persisted", b"kept").get(10)
        producer.close()
        pids = _recorded_pids(first)
    assert _survivors(pids) == {}
    assert not first.state_file.exists()
    card = tmp_path / "s3" / "objects" / "tunewire" / "adapters" / "x" / "run-1" / "card.md"
    assert card.read_bytes() == b"# card"

    with EmbeddedStack(tmp_path, startup_timeout=20, persist_kafka=True) as second:
        s3 = second.s3_client()
        got = s3.get_object(Bucket=second.bucket, Key="adapters/x/run-1/card.md")
        assert got["Body"].read() == b"# card"
        assert got["ContentType"] == "text/markdown"
        assert got["Metadata"] == {"run-id": "run-1"}
        for key, body in tricky.items():
            assert s3.get_object(Bucket=second.bucket, Key=key)["Body"].read() == body
        s3.close()
        assert _consume_all(second.bootstrap_servers, "test.persisted", expected=1) == [b"kept"]


def test_stack_is_stopped_when_the_interpreter_exits(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from tunewire.stack import embedded\n"
        f"stack = embedded.EmbeddedStack({str(tmp_path)!r}).up()\n"
        "sys.stdout.write(stack.state_file.read_text())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    pids = {int(item["pid"]): item["identity"] for item in json.loads(result.stdout)["processes"]}
    assert len(pids) == 2
    assert _survivors(pids) == {}
    assert (tmp_path / "s3" / "index.json").is_file()


def test_down_from_another_process_and_refusal_while_running(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path, startup_timeout=20).up(detach=True)
    pids = _recorded_pids(stack)
    try:
        with pytest.raises(embedded.StackRunningError, match="tunewire down"):
            EmbeddedStack(tmp_path).up()
        code = (
            f"from tunewire.stack import embedded; embedded.EmbeddedStack({str(tmp_path)!r}).down()"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
        assert _survivors(pids) == {}
        assert not stack.state_file.exists()
        assert (tmp_path / "s3" / "index.json").is_file()
    finally:
        stack.down()  # reaps our children; the other process already stopped them


def test_service_becomes_healthy_gets_settings_and_is_stopped(tmp_path: Path) -> None:
    specs = [_stand_in("hello", HEALTHZ_SPAWN_CHILD="1")]
    owner = "owner-token-" + "x" * 20
    with EmbeddedStack(tmp_path, startup_timeout=20, api_tokens=[owner]).up(specs) as stack:
        url = stack.service_urls["hello"]
        info = httpx.get(url + "/env").json()
        expected = embedded.service_env(
            bootstrap_servers=stack.bootstrap_servers,
            s3_endpoint_url=stack.s3_endpoint_url,
            bucket="tunewire",
            http_port=int(url.rsplit(":", 1)[1]),
            principals=stack.principals,
        )
        assert {key: info["env"].get(key) for key in expected} == expected
        # The owner is a principal with every role, and only its token's hash leaves here.
        [local] = json.loads(info["env"]["TUNEWIRE_PRINCIPALS"])
        assert local["name"] == "local" and set(local["roles"]) == set(Role)
        assert local["token_sha256"] == token_digest(owner)
        assert owner not in json.dumps(info["env"])
        assert info["child_pid"] is not None
        child = int(info["child_pid"])
        pids = {**_recorded_pids(stack), child: processes.process_identity(child) or ""}
    # The whole process group went: the service, its own child, the broker and S3.
    assert _survivors(pids) == {}
    assert "listening on" in (tmp_path / "logs" / "hello.log").read_text()


def test_service_that_exits_at_once_names_its_log(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path, startup_timeout=20)
    with pytest.raises(processes.ProcessExitedError) as caught:
        stack.up([_stand_in("broken", HEALTHZ_EXIT="3")])
    message = str(caught.value)
    assert str(tmp_path / "logs" / "broken.log") in message
    assert "status 3" in message
    assert "refusing to start as asked" in message
    assert not stack.running
    assert not stack.state_file.exists()
    # Nothing of the failed stack is left: a new one can start in the same state dir at once.
    EmbeddedStack(tmp_path, startup_timeout=20).up().down()


def test_failed_snapshot_keeps_the_previous_one(tmp_path: Path) -> None:
    snapshot_dir = tmp_path / "snap"
    (snapshot_dir / "objects").mkdir(parents=True)
    previous = '{"format": 1, "buckets": {}}'
    (snapshot_dir / "index.json").write_text(previous)
    nobody_listens = objectstore.s3_client(f"http://127.0.0.1:{ports.free_port()}")
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        objectstore.snapshot(nobody_listens, snapshot_dir)
    nobody_listens.close()
    assert (snapshot_dir / "index.json").read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]


def test_down_stops_the_workloads_the_local_launcher_left_running(tmp_path: Path) -> None:
    with EmbeddedStack(tmp_path, startup_timeout=20, api_tokens=["owner-token-" + "x" * 20]).up(
        []
    ) as stack:
        workdir = Path(stack.service_env(0)["TUNEWIRE_LAUNCHER__LOCAL__WORKDIR"])
        launcher = localjobs.LocalLauncher(
            launching.LocalLauncherSettings(workdir=str(workdir)), kind="train"
        )
        spec = launching.WorkloadSpec(
            name="tw-train-left-running",
            kind="train",
            args=["--sleep", "120"],
            labels={},
            module=fake_workload.MODULE,
        )
        assert launcher.launch(spec)
        log = workdir / f"{spec.name}.log"

        def logged_running() -> None:
            text = log.read_text() if log.exists() else ""
            assert "running" in text, launcher.status(spec.name)

        eventually(logged_running, timeout_s=10, interval_s=0.1)
        assert launcher.status(spec.name).phase is launching.JobPhase.RUNNING
        pid = int(log.read_text().split("pid ")[1].split()[0])
        started = {pid: processes.process_identity(pid) or ""}
    # A trainer is stopped too, and forgotten: the next `up` resumes its run from S3.
    assert _survivors(started) == {}
    assert launcher.status(spec.name).phase is launching.JobPhase.MISSING
