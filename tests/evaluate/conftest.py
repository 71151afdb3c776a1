"""An evaluation controller on the embedded stack's S3 and Kafka, with a recording launcher."""

from __future__ import annotations

import collections.abc
import uuid

import pytest

from tests.support.evaluation import Harness, RecordingLauncher
from tunewire.core.base import settings, store
from tunewire.core.bus import producing
from tunewire.core.state import objectives
from tunewire.evaluate import config
from tunewire.evaluate.controller import EvaluationController
from tunewire.stack import embedded


@pytest.fixture
def harness(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore
) -> collections.abc.Iterator[Harness]:
    # A bucket of its own: the open evaluations it lists are this test's only, and no
    # service running on the stack ever sees (or acts on) this test's records.
    artifacts = artifacts.for_bucket(f"evaluate-test-{uuid.uuid4().hex[:12]}")
    artifacts.ensure_bucket()
    producer = producing.Producer(
        settings.KafkaSettings(bootstrap_servers=stack.bootstrap_servers), client_id="test"
    )
    launcher = RecordingLauncher()
    catalog = objectives.ObjectiveCatalog(artifacts)
    controller = EvaluationController(
        limits=config.EvaluateLimits(max_attempts=2),
        catalog=catalog,
        artifacts=artifacts,
        producer=producer,
        launcher=launcher,
    )
    try:
        yield Harness(controller, launcher, artifacts, catalog, producer, stack.bootstrap_servers)
    finally:
        producer.close()
