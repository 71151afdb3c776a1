"""The evaluator's metrics, and the readers that turn a model's outputs into them.

The metrics are pure functions, so the numbers a gate compares can be checked by hand. The
readers run a model over held-out examples the way it was trained: every prompt goes through
:func:`data.prompt_ids` and every answer through :func:`data.encode`, the same functions the
trainer and the serving side use, so a model is scored on exactly what it learnt to do.

Metric names, as they appear in ``metrics.json`` and in the objective's gates:
``accuracy`` and ``macro_f1`` for classification; ``exact_match``, ``rouge_l``,
``token_f1``, ``length_ratio``, ``eval_loss`` and ``perplexity`` for generation;
``json_valid_rate``, ``schema_valid_rate``, ``field_accuracy`` (and
``field_accuracy.<field>`` per output field), ``field_f1_micro`` (alias ``field_f1``),
``field_f1_macro``, ``exact_record_match``, ``eval_loss`` and ``perplexity`` for extraction.
An adapter's metrics also carry ``lift.<metric>``, its value minus the base model's
(:func:`lift`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import transformers

from tunewire.core.state import objectives
from tunewire.workloads import constraints, data

Progress = Callable[[int], None]
"""Called with the number of examples scored so far, after every batch."""

_WORD = re.compile(r"\w+")
LIFT = "lift."
"""Prefix of an adapter's gain over the base model on a metric, e.g. ``lift.accuracy``."""


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


def words(text: str) -> list[str]:
    """The words of an answer: runs of letters, digits and underscores after lower-casing,
    so punctuation and spacing do not count."""
    return _WORD.findall(text.lower())


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F-measure (beta 1) of one answer: the longest common subsequence of
    :func:`words`. Two empty answers agree fully (1.0); one empty answer scores 0.
    """
    ref, cand = words(reference), words(candidate)
    return _overlap_f1(_lcs_length(ref, cand), len(ref), len(cand))


def token_f1(reference: str, candidate: str) -> float:
    """SQuAD's answer F1: precision and recall of the words two answers share, as bags (a
    word counts as often as it occurs in both), so word order does not matter as it does
    for :func:`rouge_l`. Words are :func:`words`, the same as ROUGE-L reads (SQuAD also
    drops articles; this does not). Two empty answers agree (1.0); one empty scores 0.
    """
    ref, cand = words(reference), words(candidate)
    shared = collections.Counter(ref) & collections.Counter(cand)
    return _overlap_f1(sum(shared.values()), len(ref), len(cand))


def mean_rouge_l(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """:func:`rouge_l` averaged over examples."""
    return _mean_of(rouge_l, expected, predicted)


def mean_token_f1(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """:func:`token_f1` averaged over examples."""
    return _mean_of(token_f1, expected, predicted)


def length_ratio(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """The mean over examples of the answer's length over the reference's, in :func:`words`
    (not model tokens, so base models with other tokenizers compare): above 1 an adapter
    rambles, below 1 it cuts answers short. A reference without words counts as one word.
    """
    return _mean_of(lambda e, p: len(words(p)) / max(1, len(words(e))), expected, predicted)


def perplexity(mean_token_loss: float) -> float:
    """``exp`` of the mean negative log-likelihood per answer token (inf on overflow)."""
    try:
        return math.exp(mean_token_loss)
    except OverflowError:
        return math.inf


def parse_object(text: str) -> dict[str, Any] | None:
    """The JSON object an answer holds, or None when it is not one."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def extraction_metrics(
    output: objectives.Output, expected: Sequence[str], predicted: Sequence[str]
) -> dict[str, float]:
    """How well answers fill the output's fields, against the references' canonical JSON.

    - ``json_valid_rate``: the fraction of answers that parse as a JSON object.
    - ``schema_valid_rate``: the fraction that are valid answers (``Output.problems`` empty).
    - ``field_accuracy.<field>``: the fraction of examples whose answer has the field's
      reference value (a field absent from both, or null, agrees); an answer that is not
      a JSON object gets every field wrong. ``field_accuracy`` is their mean over fields.
    - ``field_f1_micro`` and ``field_f1_macro``: per field, over examples, a predicted
      value is a true positive when it equals the reference's non-null value; a false
      positive when it is non-null and the reference has no value or another one; a false
      negative when the reference has a value the answer does not match (so a wrong value
      is both). Micro pools the counts of every field into one F1, so frequent fields
      weigh more; macro averages the per-field F1, leaving out fields never expected nor
      predicted (as :func:`macro_f1` does labels). With nothing expected nor predicted
      either one is 1.0. ``field_f1`` is the micro one.
    - ``exact_record_match``: the fraction of answers with every field right and no other.

    Values compare by JSON type: ``true`` is not ``1``, while ``1`` equals ``1.0``.
    :class:`ValueError` when a reference is not a JSON object.
    """
    _check_pairs(expected, predicted)
    tallies = {name: _FieldTally() for name in output.fields}
    valid = schema_valid = records = 0
    for reference_text, text in zip(expected, predicted, strict=True):
        reference = parse_object(reference_text)
        if reference is None:
            raise ValueError(f"the reference answer {reference_text!r} is not a JSON object")
        values = parse_object(text)
        answer = values if values is not None else {}
        for name, tally in tallies.items():
            tally.add(reference.get(name), answer.get(name), answered=values is not None)
        if values is not None:
            valid += 1
            schema_valid += not output.problems(values)
            records += _same_record(output, reference, values)
    count = len(expected)
    accuracies = {name: t.correct / count for name, t in tallies.items()}
    pooled = _f1(
        sum(t.hits for t in tallies.values()),
        sum(t.false_positives for t in tallies.values()),
        sum(t.false_negatives for t in tallies.values()),
    )
    micro = 1.0 if pooled is None else pooled
    per_field = [f1 for t in tallies.values() if (f1 := t.f1()) is not None]
    return {
        "json_valid_rate": valid / count,
        "schema_valid_rate": schema_valid / count,
        "field_accuracy": sum(accuracies.values()) / len(accuracies),
        **{f"field_accuracy.{name}": value for name, value in accuracies.items()},
        "field_f1_micro": micro,
        "field_f1_macro": sum(per_field) / len(per_field) if per_field else 1.0,
        "field_f1": micro,
        "exact_record_match": records / count,
    }


def lift(values: Mapping[str, float], base: Mapping[str, float]) -> dict[str, float]:
    """An adapter's gain over the base model on each metric both have (its value minus the
    base's; for a loss, negative is better), as ``lift.<metric>``, so a gate can ask for
    one. A metric either model has no finite value for has no lift."""
    return {
        LIFT + name: value - base[name]
        for name, value in values.items()
        if name in base and math.isfinite(value) and math.isfinite(base[name])
    }


@dataclasses.dataclass
class _FieldTally:
    """One output field's counts over examples (see :func:`extraction_metrics`)."""

    correct: int = 0
    hits: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def add(self, expected: Any, predicted: Any, *, answered: bool) -> None:
        """Count one example's reference value and answered value (None when absent);
        ``answered`` is False when the answer is not a JSON object at all."""
        right = answered and _same(expected, predicted)
        hit = right and expected is not None
        self.correct += right
        self.hits += hit
        self.false_positives += predicted is not None and not hit
        self.false_negatives += expected is not None and not hit

    def f1(self) -> float | None:
        """The field's F1, or None when it was never expected nor predicted."""
        return _f1(self.hits, self.false_positives, self.false_negatives)


def _f1(hits: int, false_positives: int, false_negatives: int) -> float | None:
    """``2TP / (2TP + FP + FN)``, or None without any of them."""
    total = 2 * hits + false_positives + false_negatives
    return 2 * hits / total if total else None


def _same_record(
    output: objectives.Output, reference: Mapping[str, Any], values: Mapping[str, Any]
) -> bool:
    """Every field of the output as in the reference, and no value outside them."""
    extra = {name for name, value in values.items() if value is not None} - set(output.fields)
    return not extra and all(_same(reference.get(n), values.get(n)) for n in output.fields)


def _same(expected: Any, predicted: Any) -> bool:
    """Equal as JSON values: a boolean equals only a boolean (Python has ``True == 1``)."""
    return isinstance(expected, bool) == isinstance(predicted, bool) and expected == predicted


def _overlap_f1(shared: int, reference_length: int, candidate_length: int) -> float:
    """The F-measure of ``shared`` words out of a reference and a candidate answer."""
    if not reference_length and not candidate_length:
        return 1.0
    if not shared:
        return 0.0
    precision = shared / candidate_length
    recall = shared / reference_length
    return 2 * precision * recall / (precision + recall)


def _mean_of(
    metric: Callable[[str, str], float], expected: Sequence[str], predicted: Sequence[str]
) -> float:
    """``metric(reference, answer)`` averaged over examples."""
    _check_pairs(expected, predicted)
    scores = [metric(e, p) for e, p in zip(expected, predicted, strict=True)]
    return sum(scores) / len(scores)


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
    """Exact match, ROUGE-L, token F1 and length ratio of greedy answers; loss and
    perplexity of the references."""
    generated, mean_loss = _answers_and_loss(
        model,
        tokenizer,
        examples,
        max_seq_len=max_seq_len,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        on_progress=on_progress,
    )
    expected = [answer(e) for e in examples]
    values = {
        "exact_match": exact_match(expected, generated),
        "rouge_l": mean_rouge_l(expected, generated),
        "token_f1": mean_token_f1(expected, generated),
        "length_ratio": length_ratio(expected, generated),
        "eval_loss": mean_loss,
        "perplexity": perplexity(mean_loss),
    }
    return Scored(values=values, answers=generated)


def score_extraction(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    output: objectives.Output,
    max_seq_len: int,
    max_new_tokens: int,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> Scored:
    """:func:`extraction_metrics` of greedy answers held to the output's JSON schema, as
    serving holds them (so invalid JSON only comes from running out of tokens); loss and
    perplexity of the references."""
    generated, mean_loss = _answers_and_loss(
        model,
        tokenizer,
        examples,
        max_seq_len=max_seq_len,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        on_progress=on_progress,
        grammar=Grammar.of_schema(tokenizer, output.json_schema()),
    )
    expected = [answer(e) for e in examples]
    values = {
        **extraction_metrics(output, expected, generated),
        "eval_loss": mean_loss,
        "perplexity": perplexity(mean_loss),
    }
    return Scored(values=values, answers=generated)


def _answers_and_loss(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    max_seq_len: int,
    max_new_tokens: int,
    batch_size: int,
    on_progress: Progress | None,
    grammar: Grammar | None = None,
) -> tuple[list[str], float]:
    """Greedy answers (held to ``grammar`` when given) and the mean loss per token of the
    references, a batch at a time."""
    generated: list[str] = []
    loss_sum = 0.0
    tokens = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        generated.extend(
            generate(
                model,
                tokenizer,
                batch,
                max_new_tokens=max_new_tokens,
                max_seq_len=max_seq_len,
                grammar=grammar,
            )
        )
        encoded = [data.encode(tokenizer, e["messages"], max_seq_len=max_seq_len) for e in batch]
        logprob, count = _answer_logprobs(model, tokenizer, encoded)
        loss_sum -= float(logprob.sum())
        tokens += int(count.sum())
        if on_progress is not None:
            on_progress(start + len(batch))
    return generated, loss_sum / tokens


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


@dataclasses.dataclass(frozen=True)
class Grammar:
    """A grammar every generated answer is held to, over the model's vocabulary."""

    vocabulary: constraints.Vocabulary
    text: str

    @classmethod
    def of_schema(cls, tokenizer: Any, schema: dict[str, Any]) -> Grammar:
        """JSON valid against ``schema``, compact as the canonical answers adapters learn."""
        return cls(constraints.Vocabulary(tokenizer), constraints.json_schema_grammar(schema))


class HeldToGrammar(transformers.LogitsProcessor):
    """Holds every row of a ``generate`` call to its own matcher of one grammar, as
    serving's ``RowsConstrain`` does: at each step a row's matcher first takes the token the
    row picked last, then the tokens it does not allow next are masked. A row that ended
    its turn is left alone (``generate`` pads it)."""

    def __init__(self, grammar: Grammar, *, rows: int, prompt_width: int, eos_id: int) -> None:
        self._matchers = [grammar.vocabulary.matcher(grammar.text) for _ in range(rows)]
        self._open = [True] * rows
        self._prompt_width = prompt_width
        self._eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self._prompt_width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self._open[row]:
                    self._matchers[row].accept(int(token))
                    self._open[row] = token != self._eos_id
        # A matcher masks with a CPU tensor: mask a CPU copy of the scores (the scores
        # themselves on a CPU model) and hand it back on the model's device.
        held = scores.cpu()
        for row, matcher in enumerate(self._matchers):
            if self._open[row]:
                matcher.restrict(held[row])
        return held.to(scores.device)


def generate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    max_new_tokens: int,
    max_seq_len: int,
    grammar: Grammar | None = None,
) -> list[str]:
    """Greedy answers to the examples' prompts, decoded without special tokens.

    Prompts are left-padded into one batch, so every answer starts right after its own
    prompt; a prompt longer than ``max_seq_len`` keeps its end, as in training. With
    ``grammar``, every answer follows it (:class:`HeldToGrammar`).
    """
    prompts = [data.prompt_ids(tokenizer, e["messages"])[-max_seq_len:] for e in examples]
    input_ids, attention_mask = _left_pad(prompts, pad_id=_pad_id(tokenizer))
    processors = transformers.LogitsProcessorList()
    if grammar is not None:
        processors.append(
            HeldToGrammar(
                grammar,
                rows=len(prompts),
                prompt_width=input_ids.shape[1],
                eos_id=tokenizer.eos_token_id,
            )
        )
    device = _device(model)
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=_pad_id(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
            logits_processor=processors,
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
