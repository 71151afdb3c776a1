"""The overview's sources: the raw archive's counts, and the other services when they fail."""

from __future__ import annotations

import datetime
import gzip
import uuid

from tests.support import console
from tunewire.core.base import store
from tunewire.core.state import objectives, registry
from tunewire.evaluate import config as evaluate_config
from tunewire.evaluate import overview


def _part(artifacts: store.ArtifactStore, objective: str, day: datetime.date, lines: int) -> None:
    key = f"raw/{objective}/dt={day.isoformat()}/part-000000-{uuid.uuid4().hex[:12]}.jsonl.gz"
    body = b"".join(b'{"n": %d}\n' % n for n in range(lines))
    artifacts.put_bytes(key, gzip.compress(body))


def test_events_in_are_counted_from_the_archive_over_the_window(
    artifacts: store.ArtifactStore,
) -> None:
    name = f"overview-{uuid.uuid4().hex[:8]}"
    today = datetime.date(2026, 3, 10)
    _part(artifacts, name, today, 5)
    _part(artifacts, name, today, 2)
    _part(artifacts, name, today - datetime.timedelta(days=2), 4)
    _part(artifacts, name, today - datetime.timedelta(days=3), 100)  # outside a 3-day window
    artifacts.put_bytes(f"raw/{name}/dt={today.isoformat()}/_SUCCESS", b"")  # not a part

    counter = overview.ArchiveCounter(artifacts, days=3, today=lambda: today)
    assert counter.count(name) == {"today": 7, "recent": 11, "days": 3}
    _part(artifacts, name, today, 1)  # written since: counted, the others come from memory
    assert counter.count(name) == {"today": 8, "recent": 12, "days": 3}
    assert counter.count(f"{name}-none") == {"today": 0, "recent": 0, "days": 3}


def test_a_service_that_is_down_or_unknown_leaves_only_its_cells_empty(
    artifacts: store.ArtifactStore,
) -> None:
    isolated = artifacts.for_bucket(f"overview-test-{uuid.uuid4().hex[:12]}")
    isolated.ensure_bucket()
    catalog = objectives.ObjectiveCatalog(isolated)
    spec = console.objective_spec()
    catalog.register(objectives.parse_spec(spec), actor="test")
    adapters = registry.Registry(isolated)
    adapters.register(
        spec["name"],
        run_id="ft-1",
        dataset_id="ds-1",
        objective_version=1,
        adapter_uri=isolated.uri(f"adapters/{spec['name']}/ft-1/"),
        metrics_uri=isolated.uri(f"evaluations/{spec['name']}/ft-1/metrics.json"),
    )
    adapters.decide(spec["name"], "ft-1", decision="approved", actor="rev-1", reason="good")
    _part(isolated, spec["name"], datetime.datetime.now(datetime.UTC).date(), 3)

    board = overview.Overview(
        catalog=catalog,
        adapters=adapters,
        artifacts=isolated,
        # Nothing listens on port 9 of loopback; train is not configured at all.
        settings=evaluate_config.ConsoleSettings(
            peers={"label": "http://127.0.0.1:9"}, peer_timeout_s=1
        ),
    )
    built = board.build(authorization="Bearer whatever")

    (row,) = built["objectives"]
    assert row["name"] == spec["name"]
    assert row["events"]["today"] == 3
    assert row["champion"]["run_id"] == "ft-1" and row["champion"]["decided_by"] == "rev-1"
    assert row["queue"] is None and row["snapshot"] is None and row["training"] is None
    assert row["waiting"] == 0
    assert len(built["problems"]) == 2
    assert built["problems"][0].startswith("label: unreachable at http://127.0.0.1:9")
    assert built["problems"][1] == "train: its URL is not configured (TUNEWIRE_CONSOLE__PEERS)"
    assert built["links"] == {"annotate": "http://127.0.0.1:9/console/annotate"}
