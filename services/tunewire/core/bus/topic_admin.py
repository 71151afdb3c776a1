"""Creates the topics tunewire uses and gives the DLQs their retention.

The services never create topics, so an install does it once, before they start (``tunewire
topics``, or the chart's hook Job). It only adds: a missing topic is created with the given
partitions and replication factor; an existing one keeps its partitions, replication, configs
and messages, except that a DLQ's ``retention.ms`` is set where it differs, which is how the
DLQs' retention (redacted dead letters operators read) is the operator's setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import kafka
import kafka.errors
from kafka.admin import ConfigResource, ConfigResourceType

from tunewire.core.base import settings
from tunewire.core.bus import topics

RETENTION = "retention.ms"


class TopicsRefused(Exception):
    """The brokers could not be reached, or refused a request (authorization, a replication
    factor the cluster cannot meet); the message names the topics and the broker's reason."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a created topic gets, and how long every DLQ keeps its messages."""

    partitions: int
    replication_factor: int
    dead_letter_retention_ms: int


@dataclasses.dataclass(frozen=True)
class Changes:
    """What :func:`ensure` did to each topic of :data:`topics.ALL`."""

    created: tuple[str, ...]
    retention_set: tuple[str, ...]
    """Existing DLQs whose ``retention.ms`` was set to the layout's."""
    unchanged: tuple[str, ...]


def ensure(config: settings.KafkaSettings, layout: Layout) -> Changes:
    """Create every missing topic and set every existing DLQ's retention to the layout's.

    Raises :class:`TopicsRefused`; what was done before a refusal stays done, and a rerun
    finishes the rest.
    """
    admin = _connect(config)
    try:
        existing = set(admin.list_topics())
        created = _create(admin, [t for t in topics.ALL if t not in existing], layout)
        kept_dlqs = [t for t in topics.DEAD_LETTERS if t not in created]
        retention_set = _set_retention(admin, kept_dlqs, layout.dead_letter_retention_ms)
    except kafka.errors.KafkaError as exc:
        raise TopicsRefused(f"the brokers at {config.bootstrap_servers} failed: {exc}") from None
    finally:
        admin.close()
    done = set(created) | set(retention_set)
    return Changes(created, retention_set, tuple(t for t in topics.ALL if t not in done))


def _connect(config: settings.KafkaSettings) -> Any:
    try:
        return kafka.KafkaAdminClient(
            client_id="tunewire-topics",
            bootstrap_timeout_ms=config.request_timeout_ms,
            **config.client_options(),
        )
    except kafka.errors.KafkaError as exc:
        raise TopicsRefused(
            f"cannot reach the brokers at {config.bootstrap_servers}: {exc}"
        ) from None


def _create(admin: Any, names: Sequence[str], layout: Layout) -> tuple[str, ...]:
    """Create ``names``; one that appeared meanwhile counts as existing, not as created."""
    if not names:
        return ()
    dead_letter = {RETENTION: str(layout.dead_letter_retention_ms)}
    response = admin.create_topics(
        {
            name: {
                "num_partitions": layout.partitions,
                "replication_factor": layout.replication_factor,
                "configs": dead_letter if name in topics.DEAD_LETTERS else {},
            }
            for name in names
        },
        raise_errors=False,
    )
    created, refused = set(), {}
    for result in response["topics"]:
        error = kafka.errors.for_code(result["error_code"])
        message = result["error_message"]
        if error is kafka.errors.NoError:
            created.add(result["name"])
        elif error is not kafka.errors.TopicAlreadyExistsError:
            refused[result["name"]] = str(error(message) if message else error())
    if refused:
        raise _refused("create", refused)
    return tuple(name for name in names if name in created)


def _set_retention(admin: Any, names: Sequence[str], retention_ms: int) -> tuple[str, ...]:
    """Set ``retention.ms`` on those of ``names`` where it differs (or cannot be read)."""
    if not names:
        return ()
    wanted = str(retention_ms)
    # Every config, the broker's defaults included: "modified" would hide a retention that is
    # the default, and asking for the one key makes some brokers (tansu) drop the connection.
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all"
    ).get("topic", {})
    stale = [
        name for name in names if described.get(name, {}).get(RETENTION, {}).get("value") != wanted
    ]
    if not stale:
        return ()
    results = admin.alter_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, name, configs={RETENTION: wanted})
            for name in stale
        ],
        raise_on_unknown=False,
    )
    refused = {name: why for name, why in results.get("topic", {}).items() if why != "OK"}
    if refused:
        raise _refused(f"set {RETENTION} of", refused)
    return tuple(stale)


def _refused(action: str, reasons: dict[str, str]) -> TopicsRefused:
    """One message for every topic a request failed on, the topics grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        by_reason.setdefault(reason, []).append(name)
    grouped = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())
    return TopicsRefused(f"the brokers refused to {action} {grouped}")
