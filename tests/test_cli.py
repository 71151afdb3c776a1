"""The ``tunewire`` command against the running services, as an operator would use it."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.support import datasets
from tests.support.stacks import TOKEN, TOKENS
from tests.support.waiting import eventually
from tunewire import cli, samples
from tunewire.core.base import principals, store
from tunewire.stack import embedded


def tunewire(*args: str, url: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    """Run the command in this process, as its console script would: its output and status."""
    argv = [*args, "--url", url, "--token", token] if url else list(args)
    out, err = io.StringIO(), io.StringIO()
    status: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(argv)
        except SystemExit as exc:
            status = exc.code
    code = status if isinstance(status, int) else (0 if status is None else 1)
    return subprocess.CompletedProcess(["tunewire", *argv], code, out.getvalue(), err.getvalue())


def test_objectives_register_list_get_and_errors(
    stack: embedded.EmbeddedStack, tmp_path: Path
) -> None:
    url = stack.service_urls["ingest"]
    spec: dict[str, Any] = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"cli-{uuid.uuid4().hex[:8]}"
    spec["source"]["event_type"] = f"ticket.{spec['name']}"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    registered = tunewire("objectives", "register", str(path), url=url)
    assert registered.returncode == 0, registered.stderr
    assert f"{spec['name']} is at version 1" in registered.stdout
    listed = tunewire("objectives", "list", url=url)
    assert spec["name"] in listed.stdout
    shown = tunewire("objectives", "get", spec["name"], "--json", url=url)
    assert json.loads(shown.stdout)["spec"]["labels"] == spec["labels"]

    spec["lora"]["r"] = 0
    path.write_text(yaml.safe_dump(spec))
    refused = tunewire("objectives", "update", str(path), url=url)
    assert refused.returncode == 2
    assert "lora.r" in refused.stderr and "Traceback" not in refused.stderr
    missing = tunewire("objectives", "get", "no-such-objective", url=url)
    assert missing.returncode == 2 and "404" in missing.stderr


def test_queue_status_and_an_empty_claim(stack: embedded.EmbeddedStack, tmp_path: Path) -> None:
    ingest, label = stack.service_urls["ingest"], stack.service_urls["label"]
    spec: dict[str, Any] = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"cli-{uuid.uuid4().hex[:8]}"
    spec["source"]["event_type"] = f"ticket.{spec['name']}"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert tunewire("objectives", "register", str(path), url=ingest).returncode == 0
    status = tunewire("queue", "status", spec["name"], url=label)
    assert status.returncode == 0, status.stderr
    assert "0 open" in status.stdout
    claim = tunewire("queue", "claim", spec["name"], url=label, token=TOKENS["a1"])
    assert claim.returncode == 0
    assert "nothing for you" in claim.stdout
    viewer = tunewire("queue", "claim", spec["name"], url=label, token=TOKENS["only-viewer"])
    assert viewer.returncode == 2 and "403" in viewer.stderr and "annotator" in viewer.stderr


def test_runs_evaluations_and_the_registry(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore
) -> None:
    train, evaluate = stack.service_urls["train"], stack.service_urls["evaluate"]
    name = f"cli-{uuid.uuid4().hex[:8]}"
    version = datasets.register(artifacts, datasets.quick_objective(name))
    # Small: what is shown here is the commands' output, not how good the adapter is.
    snapshot = datasets.write_snapshot(
        artifacts, objective=name, version=version, train=40, eval_=8
    )

    submitted = tunewire(
        "runs",
        "submit",
        name,
        "--dataset",
        snapshot.dataset_id,
        "--overrides",
        '{"training": {"epochs": 1}}',
        url=train,
        token=TOKENS["only-operator"],
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.split()[0]

    def evaluation() -> dict[str, Any]:
        shown = tunewire("evals", "show", name, run_id, "--json", url=evaluate)
        found: dict[str, Any] = json.loads(shown.stdout) if shown.returncode == 0 else {}
        return found

    decided = eventually(
        evaluation,
        ready=lambda found: found.get("decision"),
        timeout_s=180,
        interval_s=0.3,
        what=f"a decision on {run_id}",
    )

    listed = tunewire("runs", "list", name, url=train)
    assert run_id in listed.stdout and "succeeded" in listed.stdout
    shown_run = json.loads(tunewire("runs", "show", name, run_id, "--json", url=train).stdout)
    assert shown_run["requested_by"] == "only-operator"
    assert shown_run["config"]["training"]["epochs"] == 1
    evals = tunewire("evals", "list", name, url=evaluate)
    assert run_id in evals.stdout and decided["decision"] in evals.stdout
    registry = tunewire("adapters", name, url=evaluate)
    assert run_id in registry.stdout
    refused = tunewire("approve", name, run_id, "--reason", "looks fine", url=evaluate)
    assert refused.returncode == 2 and "409" in refused.stderr  # it was never held
    cancel = tunewire("runs", "cancel", name, run_id, "--reason", "late", url=train)
    assert cancel.returncode == 2 and "already ended" in cancel.stderr
    bad = tunewire("runs", "submit", name, "--dataset", "ds-nope", url=train)
    assert bad.returncode == 2 and "ds-nope" in bad.stderr and "Traceback" not in bad.stderr


def test_principal_prints_a_token_once_and_an_entry_holding_only_its_hash() -> None:
    made = tunewire("principal", "ana", "--role", "annotator", "--role", "viewer", "--json", url="")
    assert made.returncode == 0, made.stderr
    printed = json.loads(made.stdout)
    token, entry = printed["token"], printed["principal"]
    assert entry == {
        "name": "ana",
        "token_sha256": principals.token_digest(token),
        "roles": ["annotator", "viewer"],
    }
    assert len(token) >= principals.MIN_TOKEN_LENGTH
    reserved = tunewire("principal", "evaluator", "--role", "admin", url="")
    assert reserved.returncode == 2 and "reserved" in reserved.stderr
    assert "Traceback" not in reserved.stderr
    no_role = tunewire("principal", "ana", url="")
    assert no_role.returncode == 2 and "--role" in no_role.stderr
