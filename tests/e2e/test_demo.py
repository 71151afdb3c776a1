"""The whole loop as a newcomer runs it: ``tunewire demo`` on a stack of its own.

Every event is accounted for, an adapter is trained, evaluated and served under the
objective's name (asked with the raw held-out tickets, it answers as well as the evaluation
said), each service's ``/metrics`` shows what it did, and ``tunewire status`` reports every
service ready with the champion.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import metrics
from tunewire import demo
from tunewire.stack import embedded

pytestmark = pytest.mark.stack


def tunewire(state: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewire.cli", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_events_become_a_served_adapter(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    try:
        ran = tunewire(state, "demo", "--keep", "--json", timeout_s=600)
        assert ran.returncode == 0, ran.stderr[-3000:]
        summary = json.loads(ran.stdout.strip().splitlines()[-1])

        assert summary["records"] + summary["duplicates"] + summary["dlq"] == summary["events_in"]
        assert summary["pii_found_in_outputs"] == 0
        assert summary["examples"] > 0 and summary["dataset_id"]
        assert summary["run_status"] == "succeeded"
        # A second snapshot's adapter may be rejected: it must beat the first one's.
        assert summary["decision"] in ("approved", "rejected")
        assert summary["adapter_metrics"]["accuracy"] > summary["base_metrics"]["accuracy"]
        served = summary["served_model"]
        assert served and served.startswith("support-intent@")
        right = sum(a["support-intent"] == a["label"] for a in summary["answers"])
        assert right >= 2, summary["answers"]
        # Asked with the raw held-out tickets (PII, no system message), the alias answers as
        # well as the evaluator measured, and the task endpoint scores labels as it does.
        held_out = min(summary["dataset_counts"]["eval"], demo.SERVED_EXAMPLES)
        assert summary["served_examples"] == held_out
        assert abs(summary["served_accuracy"] - summary["eval_accuracy"]) <= 0.02, summary
        assert abs(summary["task_accuracy"] - summary["eval_accuracy"]) <= 0.02, summary

        urls = embedded.describe(state)["services"]  # type: ignore[index]
        assert metrics.counter(urls["ingest"], "tunewire_ingest_events_total") >= summary["records"]
        assert metrics.counter(urls["label"], "tunewire_label_examples_total") > 0
        assert (
            metrics.counter(
                urls["train"],
                'tunewire_train_runs_total{objective="support-intent",status="succeeded"}',
            )
            >= 1
        )
        assert metrics.counter(urls["evaluate"], "tunewire_evaluate_decisions_total") >= 1
        assert metrics.counter(urls["serve"], "tunewire_serve_request_seconds_count") >= 3

        status = tunewire(state, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        reported = json.loads(status.stdout)
        assert all(info["ready"] for info in reported["services"].values())
        assert reported["champions"]["support-intent"] == served.split("@")[1]
    finally:
        stopped = tunewire(state, "down")
        assert stopped.returncode == 0, stopped.stderr
