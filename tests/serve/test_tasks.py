"""The task endpoint: a business system sends an event's data and gets the objective's answer
in its own terms — for classification, always one of the labels, with scores — prepared as
training data was (redaction, template, normal form) and asked under the trained instruction."""

from __future__ import annotations

import math
from typing import Any

import httpx

from tests.support import vllm_double
from tests.support.stacks import TOKENS
from tests.support.waiting import eventually
from tunewire.core.state import objectives
from tunewire.stack import embedded

TICKET = {
    "ticket_id": "T-1",
    "channel": "email",
    "subject": "Refund please",
    "body": "I returned the kettle, send the refund to anna@example.com",
}


def predict(url: str, objective: str, body: dict[str, Any], who: str = "app") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/objectives/{objective}/predict",
        headers={"Authorization": f"Bearer {TOKENS[who]}"},
        json=body,
        timeout=60,
    )


def answered(url: str, objective: str, body: dict[str, Any]) -> httpx.Response:
    response = predict(url, objective, body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Tunewire-Input"].startswith("prepared")
    return response


def test_a_classification_answers_one_label_with_the_evaluations_scores(
    stack: embedded.EmbeddedStack, objective: objectives.ObjectiveSpec
) -> None:
    url = stack.service_urls["serve"]
    one = eventually(lambda: answered(url, objective.name, {"data": TICKET}))
    assert one.headers["X-Tunewire-Input"] == (
        "prepared; redacted=email:1; instruction=added; answer=labels"
    )
    answer = one.json()
    assert (answer["objective"], answer["model"]) == (objective.name, f"{objective.name}@ft-sdk")
    assert answer["label"] in objective.labels
    assert set(answer["scores"]) == set(objective.labels)
    assert math.isclose(sum(answer["scores"].values()), 1.0, rel_tol=1e-6)
    assert answer["label"] == max(answer["scores"], key=answer["scores"].get)

    other = {**TICKET, "ticket_id": "T-2", "subject": "Where is my parcel", "body": "Not here."}
    batch = answered(url, objective.name, {"inputs": [TICKET, other]}).json()
    assert len(batch["predictions"]) == 2
    assert batch["predictions"][0]["label"] == answer["label"]
    assert all(p["label"] in objective.labels for p in batch["predictions"])
    pinned = answered(url, objective.name, {"data": TICKET, "model": f"{objective.name}@ft-sdk"})
    assert pinned.json()["label"] == answer["label"]


def test_on_vllm_the_label_is_constrained_to_the_objectives_labels(
    vllm: tuple[vllm_double.VllmDouble, str], objective: objectives.ObjectiveSpec
) -> None:
    double, url = vllm
    answer = eventually(lambda: answered(url, objective.name, {"data": TICKET})).json()
    asked = [r for r in double.requests if r.path == "/v1/chat/completions"][-1].body
    assert asked["structured_outputs"] == {"choice": list(objective.labels)}
    assert asked["model"] == f"{objective.name}@ft-sdk"
    assert asked["messages"] == [
        {"role": "system", "content": objectives.instruction(objective)},
        {
            "role": "user",
            "content": "Refund please I returned the kettle, send the refund to <EMAIL>",
        },
    ]
    # The double picks the label the text names; vLLM scores the chosen label only.
    assert answer["label"] == "refund"
    assert answer["scores"] == {"refund": 0.5}


def test_wrong_requests_are_refused_in_openais_shape(
    stack: embedded.EmbeddedStack, objective: objectives.ObjectiveSpec
) -> None:
    url = stack.service_urls["serve"]
    cases = [
        (predict(url, objective.name, {"data": {"ticket_id": "T-3"}}), 422, "subject"),
        (predict(url, objective.name, {"events": []}), 422, "`data`"),
        (predict(url, objective.name, {"inputs": [TICKET] * 65}), 422, "1 to 64"),
        (predict(url, objective.name, {"data": TICKET, "model": "base"}), 422, "`model`"),
        (predict(url, "no-such-objective", {"data": TICKET}), 404, "does not exist"),
        (predict(url, objective.name, {"data": TICKET}, who="scoped"), 403, "may not use"),
        (
            httpx.post(f"{url}/v1/objectives/{objective.name}/predict", json={"data": TICKET}),
            401,
            "",
        ),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert words in error["message"]
        assert error["code"] == status


def test_an_extraction_answers_an_object_valid_against_its_output_schema(
    stack: embedded.EmbeddedStack,
    vllm: tuple[vllm_double.VllmDouble, str],
    extraction: objectives.ObjectiveSpec,
) -> None:
    assert extraction.output is not None
    log = {"entry_id": "M-1", "log": "Pump 3 seal leaking, call me at +49 171 2345678"}
    for url in (stack.service_urls["serve"], vllm[1]):
        answer = eventually(lambda url=url: answered(url, extraction.name, {"data": log}))
        assert answer.headers["X-Tunewire-Input"] == (
            "prepared; redacted=phone:1; instruction=added; answer=schema"
        )
        output = answer.json()["output"]
        assert extraction.output.problems(output) == []
    asked = [r for r in vllm[0].requests if r.path == "/v1/chat/completions"][-1].body
    assert asked["response_format"]["json_schema"]["schema"] == extraction.output.json_schema()
    assert asked["messages"][1]["content"] == "Pump 3 seal leaking, call me at <PHONE>"
