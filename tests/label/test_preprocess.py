"""Pre-processing: normalisation, exact-duplicate keys and the stable split."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunewire.core.text import normalising
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
    assert normalising.normalise(raw) == expected


def test_normalise_keeps_joiners_that_change_meaning() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert normalising.normalise(family) == family


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


def test_invisible_characters_go_in_non_ascii_text_too() -> None:
    assert normalising.normalise("caf\u00e9\u200b au\u2060 lait\u180e") == "café au lait"
    assert normalising.normalise("e\u200b\u0301") == "e\u0301"  # removed after NFKC, as ever


def test_minhash_values_are_datasketchs_one_text_or_many_at_a_time() -> None:
    import zlib

    import datasketch
    import numpy as np

    texts = ["", "ok", "Cannot log in since Monday", " ".join(["word"] * 3), *TICKET_TEXTS]
    hasher = preprocess.MinHasher()
    together = hasher.signatures(texts)
    assert together == [hasher.signature(text) for text in texts]
    for text, signature in zip(texts, together, strict=True):
        words = normalising.normalise(text).casefold().encode().split(b" ")
        shingles = {b" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
        expected = datasketch.MinHash(num_perm=64, seed=1, hashfunc=zlib.crc32)
        expected.update_batch(list(shingles))
        assert np.array_equal(hasher.from_signature(signature), expected.hashvalues)
    assert hasher.signatures([]) == []


TICKET_TEXTS = [
    "Refund for order 12 The blender stopped working after two weeks of light use",
    "Parcel late again Tracking says delivered but nothing arrived at the door today",
]
