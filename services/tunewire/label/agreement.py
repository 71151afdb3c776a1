"""How several annotators' answers resolve into one label, and how much they agree.

A task is *resolved* once some label has at least ``labels_per_item`` votes and strictly
more than any other label. The answers are walked in the order they were given, each under
its own ``labels_per_item``, so the outcome depends on the answers alone: any replica, or a
restart, recomputes from S3 the same resolution that the resolving submit reported.
Pure functions, kept apart from the queue's storage and leases so the rules read on their own.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

from tunewire.label import queue_records


def resolve(answers: Iterable[queue_records.Answer]) -> tuple[str, tuple[str, ...]] | None:
    """The label and its voters at the first answer that resolved the task, if any.

    Walks the answers in the order they were given, applying each answer's own
    ``labels_per_item``, so the result is the one the resolving submit reported, whatever
    arrived later.
    """
    step = _resolving_step(answers)
    if step is None:
        return None
    ordered, index, label = step
    return label, tuple(a.annotator for a in ordered[: index + 1] if a.label == label)


def deciding_answer(answers: Iterable[queue_records.Answer]) -> str | None:
    """The annotator whose answer resolved the task, if it is resolved."""
    step = _resolving_step(answers)
    return None if step is None else step[0][step[1]].annotator


def agreement_of(items: Sequence[Mapping[str, int]]) -> dict[str, float | int]:
    """Percent agreement and (generalised) Fleiss' kappa of label counts per item.

    Each item maps a label to how many annotators gave it; items with fewer than two
    answers are ignored. See :meth:`tunewire.label.queue.HumanQueue.agreement` for the
    definitions.
    """
    rated = [item for item in items if sum(item.values()) >= 2]
    result: dict[str, float | int] = {"items": len(rated)}
    if not rated:
        return result
    per_item = []
    pooled: collections.Counter[str] = collections.Counter()
    for item in rated:
        n = sum(item.values())
        per_item.append(sum(c * (c - 1) for c in item.values()) / (n * (n - 1)))
        pooled.update(item)
    observed = sum(per_item) / len(per_item)
    result["percent_agreement"] = 100.0 * observed
    total = sum(pooled.values())
    expected = sum((c / total) ** 2 for c in pooled.values())
    if expected < 1.0:
        result["fleiss_kappa"] = (observed - expected) / (1.0 - expected)
    return result


def _resolving_step(
    answers: Iterable[queue_records.Answer],
) -> tuple[list[queue_records.Answer], int, str] | None:
    """The answers in the order given, the index of the resolving one, and its label."""
    ordered = sorted(answers, key=lambda a: (a.answered_at, a.annotator))
    tally: collections.Counter[str] = collections.Counter()
    for index, answer in enumerate(ordered):
        tally[answer.label] += 1
        leaders = tally.most_common(2)
        top, votes = leaders[0]
        runner_up = leaders[1][1] if len(leaders) > 1 else 0
        if votes >= answer.labels_per_item and votes > runner_up:
            return ordered, index, top
    return None
