"""Pre-processing: normalisation, exact-duplicate keys, the stable split and near-duplicates."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from tunewire import samples
from tunewire.label import preprocess


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ﬁle", "file"),
        ("\uff21\uff22\uff23\uff11\uff12\uff13", "ABC123"),
        ("a\u00a0b", "a b"),
        ("  a\t\tb\r\n\nc  ", "a b c"),
        ("a\u2028\u3000b", "a b"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("\u200b \u200b", ""),
        ("", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert preprocess.normalise(raw) == expected


def test_normalise_keeps_joiners_that_change_meaning() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert preprocess.normalise(family) == family


def test_content_key_ignores_case_spacing_and_compatibility_forms() -> None:
    key = preprocess.content_key("Refund request\nfor ORDER 12")
    assert key == preprocess.content_key("  refund   REQUEST for order \uff11\uff12 ")
    assert key == preprocess.content_key("refund\u00a0request\tfor\u200b order 12")
    assert key != preprocess.content_key("Refund request for order 13")
    assert len(key) == 64 and int(key, 16) >= 0


def test_split_of_is_stable_across_calls_and_processes() -> None:
    assert preprocess.split_of("ticket-1", 0.2) == "eval"
    assert preprocess.split_of("T-7-000042", 0.2) == "train"
    code = "from tunewire.label import preprocess as p; print(p.split_of('ticket-1', 0.2))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == "eval"


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_split_of_matches_the_fraction(fraction: float) -> None:
    ids = [f"T-7-{n:06d}" for n in range(10_000)]
    share = sum(preprocess.split_of(i, fraction) == "eval" for i in ids) / len(ids)
    assert abs(share - fraction) <= 0.02


def test_raising_the_fraction_only_moves_items_from_train_to_eval() -> None:
    ids = [f"ticket-{n}" for n in range(2_000)]
    before = {i for i in ids if preprocess.split_of(i, 0.2) == "eval"}
    after = {i for i in ids if preprocess.split_of(i, 0.3) == "eval"}
    assert before < after
    assert before == {i for i in ids if preprocess.split_of(i, 0.2) == "eval"}


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
        index = preprocess.NearDuplicates()
        assert index.seen_or_add("original", " ".join(WORDS)) is None
        edited = [*WORDS]
        edited[position] = "banana"
        found += index.seen_or_add(f"edit-{position}", " ".join(edited)) == "original"
    assert found >= 34


def test_case_and_spacing_variants_are_duplicates() -> None:
    index = preprocess.NearDuplicates()
    assert index.seen_or_add("a", "Cannot log in since Monday") is None
    assert index.seen_or_add("b", "CANNOT   log\nin since monday") == "a"
    assert index.seen_or_add("c", "ok") is None
    assert index.seen_or_add("d", "OK") == "c"


def test_a_redelivered_key_is_not_its_own_duplicate() -> None:
    index = preprocess.NearDuplicates()
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
    index = preprocess.NearDuplicates()
    flagged = [key for key, text in seen.items() if index.seen_or_add(str(key), text) is not None]
    assert flagged == []


def test_random_unrelated_texts_are_not_flagged() -> None:
    vocabulary = sorted(set(WORDS))
    rng = random.Random(3)
    index = preprocess.NearDuplicates()
    flagged = 0
    for n in range(500):
        words = rng.choices(vocabulary, k=30)
        flagged += index.seen_or_add(f"r{n}", " ".join(words)) is not None
    assert flagged / 500 <= 0.01


def test_sample_tickets_are_deduplicated_reproducibly() -> None:
    texts = _ticket_texts(2_000)
    first = [preprocess.NearDuplicates().seen_or_add(k, t) for k, t in texts[:1]]
    runs = []
    for _ in range(2):
        index = preprocess.NearDuplicates()
        runs.append([index.seen_or_add(k, t) for k, t in texts])
    assert runs[0] == runs[1]
    assert first == [None]
    # The tickets are put together from independent parts: few are near-copies.
    assert sum(d is not None for d in runs[0]) / len(texts) < 0.2


def test_capacity_evicts_the_oldest_first() -> None:
    index = preprocess.NearDuplicates(capacity=3)
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
    index = preprocess.NearDuplicates(shingle_words=3)
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
        preprocess.NearDuplicates(**kwargs)  # type: ignore[arg-type]


def test_invisible_characters_go_in_non_ascii_text_too() -> None:
    assert preprocess.normalise("caf\u00e9\u200b au\u2060 lait\u180e") == "café au lait"
    assert preprocess.normalise("e\u200b\u0301") == "e\u0301"  # removed after NFKC, as ever


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
        num_perm=64, params=preprocess._bands(num_perm=64, threshold=threshold)
    )
    stored: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    min_equal = math.ceil(threshold * 64 - 1e-9)
    found: list[str | None] = []
    for key, text in texts:
        words = preprocess.normalise(text).casefold().encode().split(b" ")
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


@pytest.mark.parametrize(("threshold", "capacity"), [(0.8, 50_000), (0.5, 300)])
def test_results_match_the_datasketch_lsh_reference(threshold: float, capacity: int) -> None:
    rng = random.Random(11)
    texts = _ticket_texts(1_500)
    # Edited copies (one word changed) and repeated keys, so there is something to find.
    for key, text in rng.sample(texts, 300):
        words = text.split()
        words[rng.randrange(len(words))] = "changed"
        texts.append((f"{key}-edit", " ".join(words)))
    texts += rng.sample(texts, 50)
    rng.shuffle(texts)
    index = preprocess.NearDuplicates(threshold=threshold, capacity=capacity)
    ours = [index.seen_or_add(key, text) for key, text in texts]
    assert ours == _reference_seen_or_add(texts, threshold=threshold, capacity=capacity)
    assert sum(found is not None for found in ours) > 20
