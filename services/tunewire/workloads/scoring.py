"""The evaluator's metrics, and the readers that turn a model's outputs into them.

The metrics are pure functions, so the numbers a gate compares can be checked by hand. The
readers run a model over held-out examples the way it was trained: every prompt goes through
:func:`data.prompt_ids` and every answer through :func:`data.encode`, the same functions the
trainer and the serving side use, so a model is scored on exactly what it learnt to do.

Metric names, as they appear in ``metrics.json`` and in the objective's gates:
``accuracy`` and ``macro_f1`` for classification; ``exact_match``, ``rouge_l``,
``eval_loss`` and ``perplexity`` for generation.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tunewire.workloads import data

Progress = Callable[[int], None]
"""Called with the number of examples scored so far, after every batch."""

_WORD = re.compile(r"\w+")


# -- metrics ------------------------------------------------------------------------------


def accuracy(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """The fraction of examples whose prediction equals the expected label exactly."""
    _check_pairs(expected, predicted)
    return sum(e == p for e, p in zip(expected, predicted, strict=True)) / len(expected)


def macro_f1(expected: Sequence[str], predicted: Sequence[str], *, labels: Sequence[str]) -> float:
    """The unweighted mean of the per-label F1 over the objective's labels.

    A label that is neither expected nor predicted anywhere in the split is left out of the
    mean: an eval split too small to hold every label should not score a perfect model below
    1.0 (counting it as 0) nor hide a missing class behind a free 1.0. A prediction outside
    ``labels`` earns no label a true positive, so it still costs the expected label recall.
    A label with no predictions has precision 0; one never expected has recall 0.
    """
    _check_pairs(expected, predicted)
    true_positive: collections.Counter[str] = collections.Counter()
    expected_count = collections.Counter(expected)
    predicted_count = collections.Counter(predicted)
    for e, p in zip(expected, predicted, strict=True):
        if e == p:
            true_positive[e] += 1
    scores = []
    for label in dict.fromkeys(labels):
        if not expected_count[label] and not predicted_count[label]:
            continue
        hits = true_positive[label]
        precision = hits / predicted_count[label] if predicted_count[label] else 0.0
        recall = hits / expected_count[label] if expected_count[label] else 0.0
        total = precision + recall
        scores.append(2 * precision * recall / total if total else 0.0)
    if not scores:
        raise ValueError("none of the objective's labels occurs in the examples")
    return sum(scores) / len(scores)


def normalise(text: str) -> str:
    """Lower-case text with runs of whitespace folded to one space, ends stripped."""
    return " ".join(text.lower().split())


def exact_match(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """The fraction of answers equal to the reference after :func:`normalise`."""
    _check_pairs(expected, predicted)
    hits = sum(normalise(e) == normalise(p) for e, p in zip(expected, predicted, strict=True))
    return hits / len(expected)


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F-measure (beta 1) of one answer: the longest common subsequence of words.

    Words are runs of letters, digits and underscores after lower-casing, so punctuation and
    spacing do not count. Two empty answers agree fully (1.0); one empty answer scores 0.
    """
    ref = _WORD.findall(reference.lower())
    cand = _WORD.findall(candidate.lower())
    if not ref and not cand:
        return 1.0
    common = _lcs_length(ref, cand)
    if not common:
        return 0.0
    precision = common / len(cand)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """:func:`rouge_l` averaged over examples."""
    _check_pairs(expected, predicted)
    scores = [rouge_l(e, p) for e, p in zip(expected, predicted, strict=True)]
    return sum(scores) / len(scores)


def perplexity(mean_token_loss: float) -> float:
    """``exp`` of the mean negative log-likelihood per answer token (inf on overflow)."""
    try:
        return math.exp(mean_token_loss)
    except OverflowError:
        return math.inf


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def _check_pairs(expected: Sequence[str], predicted: Sequence[str]) -> None:
    if len(expected) != len(predicted):
        raise ValueError(f"{len(expected)} expected answers but {len(predicted)} predictions")
    if not expected:
        raise ValueError("no examples to score")


# -- readers ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scored:
    """One model's metrics on a split, with what it answered for each example."""

    values: dict[str, float]
    answers: list[str]
    """Per example, in order: the label chosen, or the text generated."""


def answer(example: dict[str, Any]) -> str:
    """The reference answer of a dataset example (its assistant turn)."""
    return str(example["messages"][-1]["content"])


def question(example: dict[str, Any]) -> str:
    """The text the model is asked about (the last user turn), for people to read."""
    users = [m["content"] for m in example["messages"] if m["role"] == "user"]
    return str(users[-1]) if users else ""


def score_classification(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str],
    max_seq_len: int,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> Scored:
    """Accuracy and macro-F1, each example given its likeliest label (:func:`label_logprobs`).

    The model is never asked to generate, so it can only pick one of ``labels``, and a base
    model that would ramble still gets a fair score. Ties go to the label listed first.
    """
    scores = label_logprobs(
        model,
        tokenizer,
        examples,
        labels=labels,
        max_seq_len=max_seq_len,
        batch_size=batch_size,
        on_progress=on_progress,
    )
    chosen = [labels[int(i)] for i in scores.argmax(dim=1)]
    expected = [answer(e) for e in examples]
    values = {
        "accuracy": accuracy(expected, chosen),
        "macro_f1": macro_f1(expected, chosen, labels=labels),
    }
    return Scored(values=values, answers=chosen)


def score_generation(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    max_seq_len: int,
    max_new_tokens: int,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> Scored:
    """Exact match and ROUGE-L of greedy answers; loss and perplexity of the references."""
    generated: list[str] = []
    loss_sum = 0.0
    tokens = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        generated.extend(
            generate(
                model, tokenizer, batch, max_new_tokens=max_new_tokens, max_seq_len=max_seq_len
            )
        )
        encoded = [data.encode(tokenizer, e["messages"], max_seq_len=max_seq_len) for e in batch]
        logprob, count = _answer_logprobs(model, tokenizer, encoded)
        loss_sum -= float(logprob.sum())
        tokens += int(count.sum())
        if on_progress is not None:
            on_progress(start + len(batch))
    expected = [answer(e) for e in examples]
    mean_loss = loss_sum / tokens
    values = {
        "exact_match": exact_match(expected, generated),
        "rouge_l": mean_rouge_l(expected, generated),
        "eval_loss": mean_loss,
        "perplexity": perplexity(mean_loss),
    }
    return Scored(values=values, answers=generated)


def label_logprobs(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str],
    max_seq_len: int,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> torch.Tensor:
    """The log-likelihood of every label as each example's answer (examples x labels).

    Each label is put in the assistant turn and encoded exactly as in training
    (:func:`data.encode`): its score is the summed log-probability of the label's tokens and
    the eos after the prompt. One forward pass covers ``batch_size`` examples times every
    label.
    """
    if not labels:
        raise ValueError("a classification objective needs labels to choose from")
    rows: list[torch.Tensor] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        encoded = [
            data.encode(tokenizer, _with_answer(e["messages"], label), max_seq_len=max_seq_len)
            for e in batch
            for label in labels
        ]
        logprob, _ = _answer_logprobs(model, tokenizer, encoded)
        rows.append(logprob.view(len(batch), len(labels)))
        if on_progress is not None:
            on_progress(start + len(batch))
    return torch.cat(rows)


def generate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    max_new_tokens: int,
    max_seq_len: int,
) -> list[str]:
    """Greedy answers to the examples' prompts, decoded without special tokens.

    Prompts are left-padded into one batch, so every answer starts right after its own
    prompt; a prompt longer than ``max_seq_len`` keeps its end, as in training.
    """
    prompts = [data.prompt_ids(tokenizer, e["messages"])[-max_seq_len:] for e in examples]
    input_ids, attention_mask = _left_pad(prompts, pad_id=_pad_id(tokenizer))
    device = _device(model)
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=_pad_id(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
        )
    new_tokens = output[:, input_ids.shape[1] :]
    return [
        str(tokenizer.decode(row, skip_special_tokens=True)).strip() for row in new_tokens.tolist()
    ]


def _with_answer(messages: Sequence[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The example's conversation with its last (assistant) turn replaced by ``text``."""
    return [*messages[:-1], {"role": "assistant", "content": text}]


def _answer_logprobs(
    model: Any, tokenizer: Any, encoded: Sequence[data.Encoded]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed log-likelihood of its answer tokens, and their count.

    Sequences are left-padded so every answer ends the row; only the logits of the last
    positions are computed (``logits_to_keep``), which keeps memory small with large
    vocabularies. Positions are counted from each sequence's first real token, so padding
    changes nothing.
    """
    input_ids, attention_mask = _left_pad([e.input_ids for e in encoded], pad_id=_pad_id(tokenizer))
    targets, _ = _left_pad([e.labels for e in encoded], pad_id=-100)
    answer_span = max(_answer_length(e.labels) for e in encoded)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    device = _device(model)
    with torch.inference_mode():
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            logits_to_keep=answer_span + 1,
        ).logits
    # Logit i predicts token i + 1: drop the last logit and align with the targets it predicts.
    predicted = logits[:, :-1, :].float().log_softmax(dim=-1)
    wanted = targets[:, -answer_span:].to(device)
    mask = wanted != -100
    picked = predicted.gather(-1, wanted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    picked = picked.masked_fill(~mask, 0.0)
    return picked.sum(dim=1).cpu(), mask.sum(dim=1).cpu()


def _answer_length(labels: Sequence[int]) -> int:
    """Tokens from the first answer token to the end of the sequence."""
    for index, value in enumerate(labels):
        if value != -100:
            return len(labels) - index
    raise ValueError("an encoded example has no answer tokens to score")


def _left_pad(rows: Sequence[Sequence[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def _device(model: Any) -> torch.device:
    device: torch.device = next(model.parameters()).device
    return device
