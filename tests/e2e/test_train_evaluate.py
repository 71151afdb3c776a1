"""Snapshot to champion on the embedded stack: the real trainer and evaluator, the gates.

This is the product's point: on the sample objective the approved adapter beats the base
model by a clear margin, and an adapter trained on a deliberately mislabelled snapshot is
rejected by the gates and never becomes champion.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support import datasets, waiting
from tunewire import samples
from tunewire.core.base import store
from tunewire.stack import embedded
from tunewire.train import runs

pytestmark = pytest.mark.stack


def wait_for_decision(evaluate_api: httpx.Client, objective: str, run_id: str) -> dict[str, Any]:
    decided: dict[str, Any] = waiting.poll_json(
        evaluate_api, f"/v1/evaluations/{objective}/{run_id}", lambda e: e.get("decision")
    )
    return decided


def test_a_good_adapter_is_approved_and_a_mislabelled_one_rejected(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    evaluate_api: httpx.Client,
) -> None:
    name = f"quality-{uuid.uuid4().hex[:6]}"
    sample_training = samples.support_intent_spec()["training"]
    version = datasets.register(artifacts, datasets.quick_objective(name, training=sample_training))

    good = datasets.write_snapshot(artifacts, objective=name, version=version, train=200, eval_=60)
    datasets.announce(stack.bootstrap_servers, good)
    good_run = runs.run_id_for(name, good.dataset_id)
    approved = wait_for_decision(evaluate_api, name, good_run)

    assert approved["decision"] == "approved", approved
    base = approved["metrics"]["base"]["values"]
    adapter = approved["metrics"]["candidate"]["values"]
    assert approved["metrics"]["base"]["examples"] == approved["metrics"]["candidate"]["examples"]
    assert adapter["accuracy"] >= base["accuracy"] + 0.3, (base, adapter)
    assert adapter["accuracy"] >= 0.8
    assert all(gate["passed"] for gate in approved["gates"])
    registry = evaluate_api.get(f"/v1/registry/{name}").json()
    assert registry["champion"] == good_run

    bad = datasets.write_snapshot(
        artifacts, objective=name, version=version, train=200, eval_=60, shuffle_labels=True
    )
    datasets.announce(stack.bootstrap_servers, bad)
    bad_run = runs.run_id_for(name, bad.dataset_id)
    rejected = wait_for_decision(evaluate_api, name, bad_run)

    assert rejected["decision"] == "rejected", rejected
    assert rejected["metrics"]["champion"]["model_ref"] == good_run
    assert "accuracy" in rejected["reason"]
    assert not all(gate["passed"] for gate in rejected["gates"])
    registry = evaluate_api.get(f"/v1/registry/{name}").json()
    assert registry["champion"] == good_run
    assert registry["versions"][bad_run]["status"] == "rejected"
