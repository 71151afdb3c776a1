"""``tunewire topics`` against a real broker: every topic created once, existing topics and
their messages left alone, the DLQs' retention set, and refusals reported without a stack trace.

The broker is tansu, which checks nothing a real cluster would (partitions, replication
factor, ACLs): what it refuses is faked with an admin client that answers as a cluster denying
the principal. tansu marks every topic config as a default, so kafka-python's default
``describe_configs`` filter ("modified") shows none of them; with ``config_filter="all"`` it
returns what was set, which is how these tests read the DLQs' ``retention.ms`` back.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import kafka
import pytest
from kafka.admin import ConfigResource, ConfigResourceType

import tunewire
from tests.support import kafka_io
from tunewire import cli
from tunewire.core.bus import topics
from tunewire.stack import broker, ports

HOUR_MS = 3_600_000


def plaintext(bootstrap: str, **more: str) -> dict[str, str]:
    """The settings of a PLAINTEXT broker, with production's consent to it."""
    return {
        "TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "TUNEWIRE_KAFKA__ALLOW_PLAINTEXT": "true",
        **more,
    }


def tunewire_topics(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``tunewire topics`` as an operator would, with exactly ``env`` as TUNEWIRE_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUNEWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "tunewire.cli", "topics", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def admin_of(bootstrap: str) -> Any:
    return kafka.KafkaAdminClient(bootstrap_servers=[bootstrap])


def partitions(admin: Any, names: list[str]) -> dict[str, int]:
    """How many partitions each topic has."""
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}


def retention_ms(admin: Any, names: list[str]) -> dict[str, str | None]:
    """Each topic's ``retention.ms`` as the broker keeps it (None where it keeps none)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    described = admin.describe_configs(resources, config_filter="all")["topic"]
    return {name: described[name].get("retention.ms", {}).get("value") for name in names}


def test_creates_every_topic_once_with_the_dlq_retention(memory_broker: broker.Broker) -> None:
    bootstrap = memory_broker.bootstrap_servers
    first = tunewire_topics(
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        "--dlq-retention-hours",
        "24",
        "--json",
        env=plaintext(bootstrap),
    )
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["created"] == list(topics.ALL)
    assert (report["partitions"], report["dead_letter_retention_ms"]) == (3, 24 * HOUR_MS)

    admin = admin_of(bootstrap)
    try:
        assert set(topics.ALL) <= set(admin.list_topics())
        assert set(partitions(admin, list(topics.ALL)).values()) == {3}
        retention = retention_ms(admin, list(topics.ALL))
        assert {retention[t] for t in topics.DEAD_LETTERS} == {str(24 * HOUR_MS)}
        others = {retention[t] for t in topics.ALL if t not in topics.DEAD_LETTERS}
        assert str(24 * HOUR_MS) not in others
    finally:
        admin.close()

    again = tunewire_topics("--dlq-retention-hours", "24", env=plaintext(bootstrap))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{len(topics.ALL)} topics: 0 created, 0 given the DLQ retention, "
        f"{len(topics.ALL)} unchanged"
    ]


def test_leaves_existing_topics_and_their_messages_alone(memory_broker: broker.Broker) -> None:
    bootstrap = memory_broker.bootstrap_servers
    dlq = topics.dlq(topics.RECORDS)
    admin = admin_of(bootstrap)
    try:
        admin.create_topics(
            {
                topics.RECORDS: {"num_partitions": 2, "replication_factor": 1},
                dlq: {
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "configs": {"retention.ms": "1000"},
                },
                "someone.else": {"num_partitions": 1, "replication_factor": 1},
            }
        )
        for topic in (topics.RECORDS, dlq, "someone.else"):
            kafka_io.produce(bootstrap, topic, [(b"k", f"kept in {topic}".encode(), [])])

        result = tunewire_topics("--dlq-retention-hours", "48", env=plaintext(bootstrap))

        assert result.returncode == 0, result.stderr
        assert f"created {topics.RECORDS}\n" not in result.stdout
        assert f"created {topics.EVENTS_RAW}\n" in result.stdout
        assert f"set the retention of {dlq} to 48 h\n" in result.stdout
        assert result.stdout.endswith(
            f"{len(topics.ALL)} topics: {len(topics.ALL) - 2} created, 1 given the DLQ "
            "retention, 1 unchanged\n"
        )
        assert "someone.else" in admin.list_topics()
        assert partitions(admin, [topics.RECORDS, dlq]) == {topics.RECORDS: 2, dlq: 1}
        assert retention_ms(admin, [dlq]) == {dlq: str(48 * HOUR_MS)}
    finally:
        admin.close()
    for topic in (topics.RECORDS, dlq, "someone.else"):
        reader = kafka_io.TopicReader(bootstrap, topic)
        try:
            (kept,) = reader.read_until(lambda found: len(found) >= 1)
            assert kept.value == f"kept in {topic}".encode()
        finally:
            reader.close()


def test_an_unreachable_broker_is_a_clear_error() -> None:
    bootstrap = f"{ports.LOOPBACK}:{ports.free_port()}"
    result = tunewire_topics(env=plaintext(bootstrap, TUNEWIRE_KAFKA__REQUEST_TIMEOUT_MS="1000"))
    assert result.returncode == 2
    assert f"tunewire: cannot reach the brokers at {bootstrap}" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_plaintext_kafka_without_consent() -> None:
    result = tunewire_topics(env={"TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert result.returncode == 2
    assert "TUNEWIRE_KAFKA__ALLOW_PLAINTEXT=true" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("existing", "refused"), [((), "create"), (topics.ALL, "set")])
def test_a_broker_that_denies_the_principal_is_a_clear_error(
    existing: tuple[str, ...],
    refused: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without ACLs in tansu, a fake admin client answers as a cluster that denies every
    CreateTopics (nothing exists yet) or AlterConfigs (everything does)."""
    denied = "[Error 29] TopicAuthorizationFailedError: Authorization failed."

    class DenyingAdmin:
        def __init__(self, **_: object) -> None:
            pass

        def list_topics(self) -> list[str]:
            return list(existing)

        def create_topics(self, new: dict[str, Any], **_: object) -> dict[str, Any]:
            answer = {"error_code": 29, "error_message": "Authorization failed."}
            return {"topics": [{"name": name, **answer} for name in new]}

        def describe_configs(self, *_: object, **__: object) -> dict[str, Any]:
            return {}

        def alter_configs(self, resources: list[ConfigResource], **_: object) -> dict[str, Any]:
            return {"topic": {resource.name: denied for resource in resources}}

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "KafkaAdminClient", DenyingAdmin)
    for name in list(os.environ):
        if name.startswith("TUNEWIRE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TUNEWIRE_KAFKA__ALLOW_PLAINTEXT", "true")
    with pytest.raises(SystemExit) as exited:
        cli.main(["topics"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    names = topics.ALL if refused == "create" else topics.DEAD_LETTERS
    assert f"tunewire: the brokers refused to {refused} " in err
    assert f"{', '.join(names)} ({denied})" in err


def _loop_topics() -> set[str]:
    """Every topic a ``topic_names=[topics.X, ...]`` argument in the services names."""
    found: set[str] = set()
    for path in pathlib.Path(tunewire.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "topic_names":
                assert isinstance(node.value, ast.List), f"{path}: topic_names is not a list"
                for element in node.value.elts:
                    assert isinstance(element, ast.Attribute), f"{path}: {ast.unparse(element)}"
                    found.add(getattr(topics, element.attr))
    return found


def test_the_consumed_topics_are_those_the_consumer_loops_read() -> None:
    """Each gets a DLQ: a topic a loop reads but CONSUMED misses would have none."""
    assert _loop_topics() == set(topics.CONSUMED)


def test_the_install_guide_lists_every_topic_once() -> None:
    guide = pathlib.Path(tunewire.__file__).parents[2] / "docs" / "install.md"
    lines = guide.read_text(encoding="utf-8").splitlines()
    listed = [line.split("`")[1] for line in lines if line.startswith("| `tunewire.")]
    assert sorted(listed) == sorted(topics.ALL)
