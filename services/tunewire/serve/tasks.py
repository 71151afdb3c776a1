"""The task endpoint: business systems send an event's data and get the answer in the task's
own terms, from the objective's served model.

The data goes through the same preparation as training data (:mod:`model_input`: redaction,
the objective's text template, normal form, cut) and is asked under the instruction the
adapter was trained with. A classification answers only one of the objective's labels, with
scores (:meth:`backend.Backend.classify`); a generation answers the text.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Literal

from tunewire.core.base import errors
from tunewire.core.state import model_input
from tunewire.serve import backend, config, deployments, openai_request, preparing

MAX_INPUTS = 64
"""Most inputs one batch request may carry."""


def inputs(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The event data to answer, and whether the request was a batch (``inputs``) rather
    than one (``data``); :class:`openai_request.RequestError` says what is wrong."""
    if "inputs" in body:
        batch = body["inputs"]
        if not isinstance(batch, list) or not batch or len(batch) > MAX_INPUTS:
            raise openai_request.RequestError(
                422, f"`inputs` must be a list of 1 to {MAX_INPUTS} data objects", param="inputs"
            )
        if not all(isinstance(item, dict) for item in batch):
            raise openai_request.RequestError(
                422, "each of `inputs` must be an object of event data fields", param="inputs"
            )
        return batch, True
    data = body.get("data")
    if not isinstance(data, dict):
        raise openai_request.RequestError(
            422, "send the event's fields as `data` (an object), or a list of them as `inputs`"
        )
    return [data], False


async def answer(
    server: backend.Backend,
    route: deployments.Route,
    data: dict[str, Any],
    *,
    limits: config.ServeLimits,
    redacted: collections.Counter[str],
) -> dict[str, Any]:
    """One input's answer: ``{"label", "scores"}`` or ``{"text"}``."""
    contract = route.contract
    if contract is None:
        raise errors.NotFound("the task endpoint answers with an objective's model, not the base")
    try:
        if route.prepare:
            text = model_input.prepare_fields(data, contract, redacted)
        else:
            text = model_input.render(contract.source, data)
    except errors.InvalidRequest as wrong:
        raise openai_request.RequestError(422, wrong.message, param="data") from None
    messages = [
        {"role": "system", "content": contract.instruction},
        {"role": "user", "content": text},
    ]
    if contract.task == "classification":
        choice = await server.classify(messages, contract.labels, target=route.target)
        return {"label": choice.label, "scores": choice.scores}
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": limits.max_output_tokens,
        "temperature": 0,
    }
    if contract.output is not None:
        body["response_format"] = preparing.json_schema_format(contract.output)
    reply = await server.complete("chat/completions", body, target=route.target)
    choice = reply["choices"][0]
    text = choice["message"]["content"]
    if contract.output is None:
        return {"text": text}
    if choice.get("finish_reason") == "length":
        raise errors.Unavailable(
            f"the model's answer did not complete within {limits.max_output_tokens} tokens "
            "(TUNEWIRE_SERVE__MAX_OUTPUT_TOKENS)"
        )
    return {"output": json.loads(text)}


def held_to(contract: model_input.InputContract | None) -> Literal["labels", "schema"] | None:
    """What the task endpoint holds an answer to."""
    if contract is None or contract.task == "generation":
        return None
    return "labels" if contract.task == "classification" else "schema"
