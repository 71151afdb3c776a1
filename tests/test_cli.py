"""The ``tunewire`` command against the running services, as an operator would use it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import TOKEN
from tunewire import samples
from tunewire.stack import embedded


def tunewire(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewire.cli", *args, "--url", url, "--token", TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
    claim = tunewire("queue", "claim", spec["name"], "--annotator", "ana", url=label)
    assert claim.returncode == 0
    assert "nothing for you" in claim.stdout
    no_annotator = tunewire("queue", "claim", spec["name"], url=label)
    assert no_annotator.returncode == 2 and "--annotator" in no_annotator.stderr
