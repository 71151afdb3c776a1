"""The objectives API on a running service: S3 is the truth, the topic carries changes."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import yaml

from tests.support import kafka_io
from tunewire import samples
from tunewire.contracts.v1 import objectives_pb2
from tunewire.stack import embedded


def _spec() -> dict[str, Any]:
    spec = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"obj-{uuid.uuid4().hex[:8]}"
    spec["source"]["event_type"] = f"ticket.{spec['name']}"
    return spec


def test_register_get_version_and_retire(
    api: httpx.Client, s3: Any, stack: embedded.EmbeddedStack
) -> None:
    spec = _spec()
    created = api.post(
        "/v1/objectives", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    assert api.post("/v1/objectives", json=spec).status_code == 409

    spec["labels"].append("other")
    updated = api.put(f"/v1/objectives/{spec['name']}", json=spec)
    assert updated.status_code == 200 and updated.json()["version"] == 2
    assert api.get(f"/v1/objectives/{spec['name']}").json()["spec"]["labels"][-1] == "other"
    assert api.get(f"/v1/objectives/{spec['name']}", params={"version": 1}).json()["version"] == 1
    assert api.get(f"/v1/objectives/{spec['name']}/versions").json()["versions"] == [1, 2]
    assert spec["name"] in [o["name"] for o in api.get("/v1/objectives").json()["objectives"]]

    retired = api.post(f"/v1/objectives/{spec['name']}/retire")
    assert retired.json()["status"] == "retired" and retired.json()["version"] == 3

    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="tunewire", Prefix=f"objectives/{spec['name']}/")[
            "Contents"
        ]
    ]
    assert keys == [f"objectives/{spec['name']}/v00000{n}.json" for n in (1, 2, 3)]

    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.objectives")
    try:
        mine = lambda msgs: [m for m in msgs if m.key == spec["name"].encode()]  # noqa: E731
        reader.read_until(lambda msgs: len(mine(msgs)) >= 3)
        changes = [
            objectives_pb2.ObjectiveChanged.FromString(m.value) for m in mine(reader.messages)
        ]
    finally:
        reader.close()
    assert [c.version for c in changes] == [1, 2, 3]
    assert changes[-1].status == objectives_pb2.OBJECTIVE_STATUS_RETIRED


def test_retired_objective_refuses_events(api: httpx.Client) -> None:
    spec = _spec()
    assert api.post("/v1/objectives", json=spec).status_code == 201
    assert api.post(f"/v1/objectives/{spec['name']}/retire").status_code == 200
    event = next(samples.tickets(1))
    event.update(type=spec["source"]["event_type"], objective=spec["name"])
    response = api.post("/v1/events", json=[event])
    assert response.status_code == 422
    assert response.json()["details"][0]["kind"] == "retired_objective"


def test_wrong_specs_are_refused_with_every_wrong_field(api: httpx.Client) -> None:
    spec = _spec()
    spec["lora"]["r"] = 0
    spec["labelling"]["rules"].append({"label": "refund", "regex": "(unclosed"})
    spec["surprise"] = True
    response = api.post("/v1/objectives", json=spec)
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["details"]}
    assert {"lora.r", "surprise"} <= fields
    assert any(
        "regex does not compile: missing )" in d["message"] for d in response.json()["details"]
    )
    assert api.get(f"/v1/objectives/{spec['name']}").status_code == 404


def test_unreadable_specs_and_missing_objectives(api: httpx.Client, ingest_url: str) -> None:
    bad_yaml = api.post(
        "/v1/objectives", content=b"a: [", headers={"content-type": "application/yaml"}
    )
    assert bad_yaml.status_code == 400
    assert api.post("/v1/objectives", json=["not", "a", "mapping"]).status_code == 422
    assert api.get("/v1/objectives/does-not-exist").status_code == 404
    assert api.put("/v1/objectives/does-not-exist", json=_spec()).status_code == 422
    assert httpx.get(f"{ingest_url}/v1/objectives").status_code == 401
