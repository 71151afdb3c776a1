"""The reviewer, history and overview views in a real browser, on a run held for review.

The run is real from end to end (see ``review_started`` in the conftest): tickets through
ingest, rule labels and a snapshot from label, an adapter from train, and evaluate holding
it for a person beside the seeded champion, the objective asking for ``approval: manual``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.support import console, stacks
from tests.support.waiting import eventually
from tunewire.stack import embedded
from tunewire.train import runs

REASON = "Beats the champion on accuracy; the label mix matches the queue."


@dataclasses.dataclass(frozen=True)
class Held:
    """A run waiting for a reviewer, and the snapshot it learnt from."""

    objective: str
    run_id: str
    manifest: dict[str, Any]


@pytest.fixture(scope="module")
def held(stack: embedded.EmbeddedStack, review_started: str) -> Held:
    """The run started for review (see the conftest), once it waits for a person."""
    name = review_started
    with (
        stacks.client_of(stack.service_urls["evaluate"]) as evaluate,
        stacks.client_of(stack.service_urls["label"]) as label,
    ):
        snapshots = eventually(
            lambda: label.get(f"/v1/datasets/{name}").json()["snapshots"],
            ready=bool,
            timeout_s=120,
            interval_s=0.25,
            what=f"a snapshot of {name}",
        )
        manifest: dict[str, Any] = snapshots[0]
        run_id = runs.run_id_for(name, manifest["dataset_id"])

        def waiting() -> dict[str, Any] | None:
            found = evaluate.get(f"/v1/evaluations/{name}/{run_id}")
            if found.status_code != 200:
                return None
            record: dict[str, Any] = found.json()
            if record["status"] not in ("evaluating", "needs_review"):
                # Fails at once: an AssertionError would only be retried until the deadline.
                pytest.fail(f"run {run_id} will never wait for review: {record}")
            return record if record["status"] == "needs_review" else None

        eventually(
            waiting,
            ready=bool,
            timeout_s=240,
            interval_s=0.25,
            what=f"run {run_id} to wait for review",
        )
    return Held(name, run_id, manifest)


def test_the_overview_shows_every_stage_of_an_objective(
    stack: embedded.EmbeddedStack,
    held: Held,
    evaluate_api: httpx.Client,
    label_api: httpx.Client,
    sign_in: console.SignIn,
    screenshots: pathlib.Path,
) -> None:
    queue = label_api.get(f"/v1/queue/{held.objective}").json()["counts"]
    assert queue["open"] > 0, "the rules left conflicts and abstentions to people"
    page = sign_in(f"{stack.service_urls['evaluate']}/console/overview", name="only-reviewer")
    row = page.locator(f'tr[data-objective="{held.objective}"]')
    expect(row.get_by_test_id("events")).to_contain_text(f"{console.TICKETS} in 7 days")
    expect(row.get_by_test_id("queue")).to_contain_text(f"{queue['open']} open")
    snapshot = row.get_by_test_id("snapshot")
    expect(snapshot).to_contain_text(held.manifest["dataset_id"])
    expect(snapshot).to_contain_text(f"{held.manifest['examples']} examples")
    training = row.get_by_test_id("training")
    expect(training).to_contain_text(held.run_id)
    expect(training).to_contain_text("succeeded")
    expect(training).to_contain_text("step")
    champion = evaluate_api.get(f"/v1/registry/{held.objective}").json()["champion"]
    expect(row.get_by_test_id("champion")).to_contain_text(champion)
    expect(row.get_by_test_id("champion")).to_contain_text("approved")
    expect(page.get_by_test_id("problems")).to_have_text("")
    link = row.get_by_test_id("queue").get_by_role("link", name="annotate")
    expect(link).to_have_attribute(
        "href",
        f"{stack.service_urls['label']}/console/annotate?objective={held.objective}",
    )
    console.shot(page, screenshots / "overview.png")


def test_a_reviewer_approves_a_held_run_and_the_alias_moves(
    stack: embedded.EmbeddedStack,
    held: Held,
    evaluate_api: httpx.Client,
    serve_api: httpx.Client,
    sign_in: console.SignIn,
    screenshots: pathlib.Path,
) -> None:
    evaluation = evaluate_api.get(f"/v1/evaluations/{held.objective}/{held.run_id}").json()
    measured = evaluation["metrics"]
    page = sign_in(f"{stack.service_urls['evaluate']}/console/review", name="only-reviewer")
    card = page.locator(f'[data-testid="review"][data-run="{held.run_id}"]')
    expect(card).to_be_visible()

    # Base, champion and candidate side by side, as the evaluator measured them.
    metrics = card.get_by_test_id("metrics")
    expect(metrics.locator("thead")).to_contain_text(console.SEEDED)
    accuracy = metrics.locator('tr[data-metric="accuracy"]')
    for model in ("base", "champion", "candidate"):
        value = measured[model]["values"]["accuracy"]
        expect(accuracy.locator(f'td[data-model="{model}"]')).to_have_text(f"{value:.3f}")
    gates = card.get_by_test_id("gates").locator("tbody tr")
    expect(gates).to_have_count(2)
    expect(gates).to_contain_text(["✓ passed", "✓ passed"])
    manifest = card.get_by_test_id("manifest")
    counts = held.manifest["counts"]
    expect(manifest).to_contain_text(held.manifest["dataset_id"])
    expect(manifest).to_contain_text(f"train {counts['train']}, eval {counts['eval']}")
    expect(manifest).to_contain_text(", ".join(held.manifest["rules"]))
    expect(manifest).to_contain_text(held.manifest["files"]["lineage"])
    distribution = card.get_by_test_id("labels").locator("tbody tr")
    expect(distribution).to_have_count(len({*held.manifest["labels"]["train"]}))
    shown = card.get_by_test_id("disagreements").locator("tbody tr")
    expected = min(5, len(measured["disagreements"]))
    assert expected >= 1, "a trained adapter and a random one disagree somewhere"
    expect(shown).to_have_count(expected)

    reason = card.get_by_test_id("reason")
    reason.fill(REASON)
    console.shot(page, screenshots / "reviewer.png")

    # A decision without a reason is refused before anything is sent.
    approve = card.get_by_test_id("approve")
    reason.fill("")
    approve.click()
    reason.fill("   ")
    approve.click()
    expect(page.get_by_test_id("notice")).to_have_text("A reason is required to approve or reject.")
    still = evaluate_api.get(f"/v1/evaluations/{held.objective}/{held.run_id}").json()
    assert still["status"] == "needs_review"

    reason.fill(REASON)
    approve.click()
    expect(card.get_by_test_id("decided")).to_have_text(f"approved by only-reviewer: {REASON}")

    registry = evaluate_api.get(f"/v1/registry/{held.objective}").json()
    assert registry["champion"] == held.run_id
    assert registry["versions"][held.run_id]["decided_by"] == "only-reviewer"
    moves = [(e["action"], e["actor"], e["reason"], e["from_run_id"]) for e in registry["history"]]
    assert ("approved", "only-reviewer", REASON, None) in moves
    assert ("promoted", "only-reviewer", REASON, console.SEEDED) in moves

    def alias_moved() -> None:
        aliases = serve_api.get("/v1/deployments").json()["aliases"]
        assert aliases.get(held.objective) == held.run_id, (
            "serve never moved the alias to the approved run"
        )

    eventually(alias_moved, timeout_s=60, interval_s=0.5)

    page.goto(f"{stack.service_urls['evaluate']}/console/history")
    decided = page.locator(f'tr[data-run="{held.run_id}"][data-action="approved"]')
    expect(decided.get_by_test_id("actor")).to_have_text("only-reviewer")
    expect(decided.get_by_test_id("why")).to_have_text(REASON)
    promoted = page.locator(f'tr[data-run="{held.run_id}"][data-action="promoted"]')
    expect(promoted).to_contain_text(f"(was {console.SEEDED})")
