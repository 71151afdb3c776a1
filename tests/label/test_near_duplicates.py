"""The near-duplicate index: what it finds, what it keeps, and the same answers however asked."""

from __future__ import annotations

import random

import pytest

from tunewire import samples
from tunewire.core.text import normalising
from tunewire.label import near_duplicates

TEXT = (
    "the customer wrote that the blender from the spring order stopped working after two weeks "
    "of light use and asked whether the warranty covers a replacement or a repair at the local "
    "service centre near the station before the end"
)
WORDS = TEXT.split(" ")


def test_finds_a_near_copy_with_one_word_changed() -> None:
    # One word changed mid-text: 3 of 38 shingles differ, a true Jaccard of 35/41 ≈ 0.85. The
    # 64-value estimate is noisy (± 0.045), so a few of the 40 variants fall below 0.8.
    assert len(WORDS) == 40
    found = 0
    for position in range(40):
        index = near_duplicates.NearDuplicates()
        assert index.seen_or_add("original", " ".join(WORDS)) is None
        edited = [*WORDS]
        edited[position] = "banana"
        found += index.seen_or_add(f"edit-{position}", " ".join(edited)) == "original"
    assert found >= 34


def test_case_and_spacing_variants_are_duplicates() -> None:
    index = near_duplicates.NearDuplicates()
    assert index.seen_or_add("a", "Cannot log in since Monday") is None
    assert index.seen_or_add("b", "CANNOT   log\nin since monday") == "a"
    assert index.seen_or_add("c", "ok") is None
    assert index.seen_or_add("d", "OK") == "c"


def test_a_redelivered_key_is_not_its_own_duplicate() -> None:
    index = near_duplicates.NearDuplicates()
    assert index.seen_or_add("a", " ".join(WORDS)) is None
    assert index.seen_or_add("a", " ".join(WORDS)) is None
    assert len(index) == 1


def _ticket_texts(count: int) -> list[tuple[str, str]]:
    return [
        (t["data"]["ticket_id"], t["data"]["subject"] + "\n" + t["data"]["body"])
        for t in samples.tickets(count)
    ]


def test_clearly_different_texts_are_not_flagged() -> None:
    # One text per sample template (subject + body): their shingles barely overlap.
    seen: dict[tuple[str, str], str] = {}
    for ticket in samples.tickets(2_000):
        data = ticket["data"]
        template = (data["subject"], data["body"][:12])
        seen.setdefault(template, data["subject"] + "\n" + data["body"])
    assert len(seen) >= 20
    index = near_duplicates.NearDuplicates()
    flagged = [key for key, text in seen.items() if index.seen_or_add(str(key), text) is not None]
    assert flagged == []


def test_random_unrelated_texts_are_not_flagged() -> None:
    vocabulary = sorted(set(WORDS))
    rng = random.Random(3)
    index = near_duplicates.NearDuplicates()
    flagged = 0
    for n in range(500):
        words = rng.choices(vocabulary, k=30)
        flagged += index.seen_or_add(f"r{n}", " ".join(words)) is not None
    assert flagged / 500 <= 0.01


def test_sample_tickets_are_deduplicated_reproducibly() -> None:
    texts = _ticket_texts(2_000)
    first = [near_duplicates.NearDuplicates().seen_or_add(k, t) for k, t in texts[:1]]
    runs = []
    for _ in range(2):
        index = near_duplicates.NearDuplicates()
        runs.append([index.seen_or_add(k, t) for k, t in texts])
    assert runs[0] == runs[1]
    assert first == [None]
    # The tickets are put together from independent parts: few are near-copies.
    assert sum(d is not None for d in runs[0]) / len(texts) < 0.2


def test_capacity_evicts_the_oldest_first() -> None:
    index = near_duplicates.NearDuplicates(capacity=3)
    texts = {
        f"k{n}": f"entirely separate message number {n} about topic {n * 17}" for n in range(5)
    }
    for key, text in texts.items():
        assert index.seen_or_add(key, text) is None
    assert len(index) == 3
    assert "k0" not in index and "k1" not in index and "k4" in index
    # Evicted texts are no longer found; the kept ones are.
    assert index.seen_or_add("again-0", texts["k0"]) is None
    assert index.seen_or_add("again-4", texts["k4"]) == "k4"
    assert len(index) == 3
    assert "k2" not in index and "again-0" in index


def test_short_texts_are_one_shingle() -> None:
    index = near_duplicates.NearDuplicates(shingle_words=3)
    assert index.seen_or_add("a", "hi") is None
    assert index.seen_or_add("b", "hi there") is None
    assert index.seen_or_add("c", "Hi  there") == "b"
    assert index.seen_or_add("d", "") is None
    assert index.seen_or_add("e", "\u200b ") == "d"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"num_perm": 2},
        {"shingle_words": 0},
        {"capacity": 0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        near_duplicates.NearDuplicates(**kwargs)  # type: ignore[arg-type]


def _reference_seen_or_add(
    texts: list[tuple[str, str]], *, threshold: float, capacity: int
) -> list[str | None]:
    """The index as it was built on datasketch's MinHashLSH: the results must not change."""
    import collections
    import math
    import zlib

    import datasketch
    import numpy as np

    lsh = datasketch.MinHashLSH(
        num_perm=64, params=near_duplicates._bands(num_perm=64, threshold=threshold)
    )
    stored: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    min_equal = math.ceil(threshold * 64 - 1e-9)
    found: list[str | None] = []
    for key, text in texts:
        words = normalising.normalise(text).casefold().encode().split(b" ")
        shingles = (
            [b" ".join(words)]
            if len(words) <= 3
            else [b" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
        )
        minhash = datasketch.MinHash(num_perm=64, seed=1, hashfunc=zlib.crc32)
        minhash.update_batch(shingles)
        scored = [
            (int(np.count_nonzero(stored[c] == minhash.hashvalues)), c)
            for c in lsh.query(minhash)
            if c != key
        ]
        top = max((n for n, _ in scored), default=0)
        if scored and top >= min_equal:
            found.append(min(c for n, c in scored if n == top))
            continue
        found.append(None)
        if key not in stored:
            if len(stored) == capacity:
                lsh.remove(stored.popitem(last=False)[0])
            stored[key] = minhash.hashvalues.copy()
            lsh.insert(key, minhash)
    return found


def _ask(
    index: near_duplicates.NearDuplicates, texts: list[tuple[str, str]], *, how: str
) -> list[str | None]:
    """Ask for every text in order: one at a time, or announced in chunks first."""
    if how == "one at a time":
        return [index.seen_or_add(key, text) for key, text in texts]
    rng = random.Random(5)
    found: list[str | None] = []
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        announced = [(key, index.hasher.signature(text)) for key, text in chunk]
        if how == "announced loosely":
            # A fifth left out (asked for unannounced, indexed among announced ones), some
            # announced and never asked for (or only after the next announcement), any order.
            announced = [item for item in announced if rng.random() < 0.8]
            announced += [(key, index.hasher.signature(text)) for key, text in rng.sample(texts, 5)]
            rng.shuffle(announced)
        index.expect(announced)
        found += [index.seen_or_add(key, text) for key, text in chunk]
    return found


@pytest.mark.parametrize("how", ["one at a time", "announced", "announced loosely"])
@pytest.mark.parametrize(
    ("threshold", "capacity", "least_found"),
    # 40: fewer than a chunk, so texts announced together evict one another.
    [(0.8, 50_000, 20), (0.5, 300, 20), (0.8, 40, 3)],
)
def test_results_match_the_datasketch_lsh_reference(
    threshold: float, capacity: int, least_found: int, how: str
) -> None:
    rng = random.Random(11)
    texts = _ticket_texts(1_500)
    # Edited copies (one word changed) and repeated keys, so there is something to find.
    for key, text in rng.sample(texts, 300):
        words = text.split()
        words[rng.randrange(len(words))] = "changed"
        texts.append((f"{key}-edit", " ".join(words)))
    texts += rng.sample(texts, 50)
    rng.shuffle(texts)
    index = near_duplicates.NearDuplicates(threshold=threshold, capacity=capacity)
    ours = _ask(index, texts, how=how)
    assert ours == _reference_seen_or_add(texts, threshold=threshold, capacity=capacity)
    assert sum(found is not None for found in ours) >= least_found
    assert len(index) <= capacity


def test_an_announcement_with_a_malformed_signature_is_refused() -> None:
    index = near_duplicates.NearDuplicates()
    good = index.hasher.signature(TEXT)
    with pytest.raises(ValueError, match="a signature of 12 bytes, not 256"):
        index.expect([("a", good), ("b", b"\0" * 12)])
    assert index.seen_or_add("a", TEXT, signature=good) is None
