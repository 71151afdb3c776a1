"""Text pre-processing for datasets: duplicate keys, the split, MinHash (normalisation is
the core's, :mod:`tunewire.core.text.normalising`, shared with serving).

All pure and deterministic across processes and restarts, because every replica of the label
service must reach the same answer for the same record: the same text gives the same content key,
the same source id lands in the same split, and the same text the same MinHash signature
(permutations come from a fixed seed and shingles are hashed with CRC-32, never with Python's
per-process salted ``hash``), so :mod:`near_duplicates` finds the same near-duplicates.
"""

from __future__ import annotations

import hashlib
import itertools
import zlib
from collections.abc import Sequence
from typing import Literal

import datasketch  # ships no type information
import numpy as np

from tunewire.core.text.normalising import normalise

_U16, _U13 = np.uint32(16), np.uint32(13)
_FMIX1, _FMIX2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)

_SPLIT_SCALE = float(1 << 64)
_SEED = 1
"""MinHash permutation seed; fixed so every replica and restart agrees."""


def content_key(text: str) -> str:
    """The exact-duplicate key: hex SHA-256 of the normalised, case-folded text."""
    return hashlib.sha256(normalise(text).casefold().encode("utf-8")).hexdigest()


def split_of(source_id: str, eval_fraction: float) -> Literal["train", "eval"]:
    """Which split a source item belongs to, from a hash of its id alone.

    The id is hashed (BLAKE2b, 64 bits) to a point in [0, 1); points below ``eval_fraction`` are
    eval. The answer never depends on arrival order or on other items, so an item keeps its split
    across snapshots and replicas, and every example of one source item (several labels, edits)
    lands on the same side — no leak from train into eval. Raising the fraction only moves items
    from train to eval, never back.
    """
    digest = hashlib.blake2b(source_id.encode("utf-8"), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / _SPLIT_SCALE
    return "eval" if point < eval_fraction else "train"


class MinHasher:
    """A text's MinHash signature over its word shingles: pure, and the same in every process.

    The values are datasketch's (``MinHash``, scheme affine32, seed :data:`_SEED`, CRC-32 of
    each shingle): its permutations are taken once, and :meth:`values` applies them as its
    ``update_batch`` does, minus the per-call checks (the tests compare the two). A signature
    is the values as bytes, cheap to send between processes; :meth:`from_signature` reads it
    back.
    """

    def __init__(self, *, num_perm: int = 64, shingle_words: int = 3) -> None:
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        minhash = datasketch.MinHash(num_perm=num_perm, seed=_SEED, hashfunc=zlib.crc32)
        if minhash.hashvalues.dtype != np.uint32:
            raise RuntimeError("datasketch's MinHash is no longer 32-bit affine")
        self._perm_a, self._perm_b = (np.asarray(p, dtype=np.uint32) for p in minhash.permutations)

    def signature(self, text: str) -> bytes:
        """The MinHash values of ``text``'s shingles, as bytes."""
        return self.values(text).tobytes()

    def signatures(self, texts: Sequence[str]) -> list[bytes]:
        """:meth:`signature` of each text, computed together: a few numpy steps for the
        whole batch instead of a few per text (figure in ``bench/README.md``)."""
        if not texts:
            return []
        signed = self._values([self._shingles(text) for text in texts]).tobytes()
        width = 4 * self.num_perm
        return [signed[start : start + width] for start in range(0, len(signed), width)]

    def from_signature(self, signature: bytes) -> np.ndarray:
        """The values of a :meth:`signature` (read-only)."""
        if len(signature) != 4 * self.num_perm:
            raise ValueError(
                f"a signature of {len(signature)} bytes, not {4 * self.num_perm} "
                f"({self.num_perm} permutations)"
            )
        return np.frombuffer(signature, dtype=np.uint32)

    def values(self, text: str) -> np.ndarray:
        """The MinHash values of ``text``'s shingles."""
        values: np.ndarray = self._values([self._shingles(text)])[0]
        return values

    def _values(self, shingled: Sequence[list[bytes]]) -> np.ndarray:
        """The MinHash values of each set of shingles (none empty): one row per set."""
        shingles = list(itertools.chain.from_iterable(shingled))
        hashed = np.fromiter(map(zlib.crc32, shingles), dtype=np.uint32, count=len(shingles))
        # MurmurHash3's 32-bit finaliser, then h -> a * h + b mod 2^32 per permutation.
        hashed ^= hashed >> _U16
        hashed *= _FMIX1
        hashed ^= hashed >> _U13
        hashed *= _FMIX2
        hashed ^= hashed >> _U16
        permuted = hashed[:, None] * self._perm_a + self._perm_b
        starts = np.cumsum([0, *map(len, shingled[:-1])])
        values: np.ndarray = np.minimum.reduceat(permuted, starts, axis=0)
        return values

    def _shingles(self, text: str) -> list[bytes]:
        words = normalise(text).casefold().encode("utf-8").split(b" ")
        size = self.shingle_words
        if len(words) <= size:
            return [b" ".join(words)]
        # Word i, i+1, ... i+size-1 side by side: zip stops at the last full shingle.
        return list(map(b" ".join, zip(*(words[i:] for i in range(size)), strict=False)))
