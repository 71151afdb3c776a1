"""Text pre-processing for datasets: normalisation, duplicate keys, the split, near-duplicates.

All pure and deterministic across processes and restarts, because every replica of the label
service must reach the same answer for the same record: the same text gives the same content key,
the same source id lands in the same split, and the same stream of texts finds the same
near-duplicates (MinHash permutations come from a fixed seed and shingles are hashed with CRC-32,
never with Python's per-process salted ``hash``).
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
import zlib
from typing import Literal

import datasketch  # ships no type information
import numpy as np

# Characters that render as nothing yet split words or defeat exact matching: zero width space,
# word joiner, zero width no-break space (the BOM) and the Mongolian vowel separator. The zero
# width (non-)joiners are kept: they change how Persian, Indic and emoji text reads.
_INVISIBLE_CHARS = "\u200b\u2060\ufeff\u180e"
_INVISIBLE = dict.fromkeys(map(ord, _INVISIBLE_CHARS))

_U16, _U13 = np.uint32(16), np.uint32(13)
_FMIX1, _FMIX2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)

_SPLIT_SCALE = float(1 << 64)
_RECALL = 0.95
"""Probability that the LSH proposes a pair exactly at the threshold (see :func:`_bands`)."""
_SEED = 1
"""MinHash permutation seed; fixed so every replica and restart agrees."""


def normalise(text: str) -> str:
    """Unicode NFKC, invisible characters removed, whitespace runs collapsed, stripped.

    NFKC folds compatibility forms a user never means to be different (``ﬁ`` → ``fi``,
    full-width digits → ASCII digits, the no-break space → a space), so the same ticket typed on
    two keyboards is the same text. Every run of Unicode whitespace, newlines and tabs included,
    becomes one space: line layout is not signal for the tasks we train.
    """
    folded = unicodedata.normalize("NFKC", text)
    # translate() is the slow step: skip it when there is nothing to remove (a text that is
    # all ASCII never has any of these characters).
    if not folded.isascii() and any(char in folded for char in _INVISIBLE_CHARS):
        folded = folded.translate(_INVISIBLE)
    return " ".join(folded.split())


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
        return self._values(self._shingles(text))

    def _values(self, shingles: list[bytes]) -> np.ndarray:
        """The MinHash values of a set of shingles (never empty)."""
        hashed = np.fromiter(map(zlib.crc32, shingles), dtype=np.uint32, count=len(shingles))
        # MurmurHash3's 32-bit finaliser, then h -> a * h + b mod 2^32 per permutation.
        hashed ^= hashed >> _U16
        hashed *= _FMIX1
        hashed ^= hashed >> _U13
        hashed *= _FMIX2
        hashed ^= hashed >> _U16
        values: np.ndarray = (hashed[:, None] * self._perm_a + self._perm_b).min(axis=0)
        return values

    def _shingles(self, text: str) -> list[bytes]:
        words = normalise(text).casefold().encode("utf-8").split(b" ")
        size = self.shingle_words
        if len(words) <= size:
            return [b" ".join(words)]
        # Word i, i+1, ... i+size-1 side by side: zip stops at the last full shingle.
        return list(map(b" ".join, zip(*(words[i:] for i in range(size)), strict=False)))


class NearDuplicates:
    """Finds texts that are near-copies of ones already seen (MinHash LSH over word shingles).

    A text is reduced to its shingles — every run of ``shingle_words`` consecutive words of the
    normalised, case-folded text (a shorter text is one shingle) — and two texts are
    near-duplicates when the Jaccard similarity of their shingle sets, as estimated from
    ``num_perm`` MinHash values, is at least ``threshold``.

    The LSH index only proposes candidates; its bands are chosen (see :func:`_bands`) so a pair at
    the threshold is proposed with probability ≥ 95%, and each candidate is then checked against
    its stored MinHash, so the threshold — not the banding — decides. With the default 3-word
    shingles, changing one word in the middle of a 40-word text gives a Jaccard of 35/41 ≈ 0.85;
    the default threshold of 0.8 catches that. The estimate is noisy (± about 0.05 at 64
    permutations), so short texts from one template that differ in a value or two (true Jaccard
    0.65 to 0.8) are sometimes flagged too.

    ``capacity`` bounds memory: once more keys are indexed, the oldest (first indexed) are
    evicted, so a near-duplicate of something evicted is no longer found. Not thread-safe: use one
    instance per consumer.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.8,
        num_perm: int = 64,
        shingle_words: int = 3,
        capacity: int = 200_000,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 4:
            raise ValueError(f"num_perm must be at least 4, got {num_perm}")
        if shingle_words < 1:
            raise ValueError(f"shingle_words must be at least 1, got {shingle_words}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._threshold = threshold
        self._num_perm = num_perm
        self._capacity = capacity
        # Matches needed among num_perm values for an estimated Jaccard ≥ threshold.
        self._min_equal = math.ceil(threshold * num_perm - 1e-9)
        self._hasher = MinHasher(num_perm=num_perm, shingle_words=shingle_words)
        # The LSH index: one table per band, from the band's MinHash values (as bytes) to the
        # ring row (below), or the set of rows, sharing them. (datasketch's MinHashLSH does the
        # same with keys and more bookkeeping per call; its candidates are exactly these.)
        bands, rows = _bands(num_perm=num_perm, threshold=threshold)
        self._band_span = bands * rows
        self._band_dtype = np.dtype((np.void, rows * 4))
        self._tables: list[dict[bytes, int | set[int]]] = [{} for _ in range(bands)]
        # The MinHash values of indexed texts live in one ring of rows (grown by doubling up to
        # ``capacity``): a candidate check is one vectorised comparison, each item costs
        # num_perm * 4 bytes, and the next row to overwrite is always the oldest (FIFO).
        self._rows = np.empty((min(capacity, 1024), num_perm), dtype=np.uint32)
        self._row_of: dict[str, int] = {}
        self._key_at: list[str] = []
        self._next = 0

    @property
    def hasher(self) -> MinHasher:
        """What turns a text into the MinHash signature this index compares."""
        return self._hasher

    def seen_or_add(self, key: str, text: str, *, signature: bytes | None = None) -> str | None:
        """The key of an indexed near-duplicate of ``text``, else index it and return None.

        When several indexed texts qualify, the most similar wins (the smaller key on a tie, so
        every process agrees). The entry under ``key`` itself is never reported, so a
        redelivered record does not become a duplicate of itself; a key already indexed is not
        indexed again. ``signature``, when given, is ``text``'s signature from an equal
        :class:`MinHasher` (computed elsewhere, e.g. in a worker process): the answer is the
        same as without it, only cheaper here.
        """
        if signature is None:
            values = self._hasher.values(text)
        else:
            values = self._hasher.from_signature(signature)
        bands = self._band_keys(values)
        # Candidates are rows of the ring, not keys: buckets of one template's texts hold
        # hundreds, and rows gather their values without a lookup per candidate.
        found: set[int] = set()
        for table, band in zip(self._tables, bands, strict=True):
            hit = table.get(band)
            if hit is None:
                continue
            if isinstance(hit, int):
                found.add(hit)
            else:
                found |= hit
        own = self._row_of.get(key)
        if own is not None:
            found.discard(own)
        if len(found) == 1:  # the usual case: one row, no candidate array to build
            (row,) = found
            if int((self._rows[row] == values).sum()) >= self._min_equal:
                return self._key_at[row]
        elif found:
            candidates = np.fromiter(found, dtype=np.intp, count=len(found))
            equal = (self._rows[candidates] == values).sum(axis=1)
            top = int(equal.max())
            if top >= self._min_equal:
                best: list[int] = candidates[equal == top].tolist()
                return min(self._key_at[row] for row in best)
        if key not in self._row_of:
            self._index(key, values, bands)
        return None

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, key: object) -> bool:
        return key in self._row_of

    def _band_keys(self, values: np.ndarray) -> list[bytes]:
        """Each band's MinHash values as one bytes object (the LSH tables' keys)."""
        span = np.ascontiguousarray(values[: self._band_span])
        keys: list[bytes] = span.view(self._band_dtype).tolist()
        return keys

    def _index(self, key: str, values: np.ndarray, bands: list[bytes]) -> None:
        row = self._next
        if row < len(self._key_at):
            # The ring is full: this row holds the oldest key.
            evicted = self._key_at[row]
            self._unindex(row, self._band_keys(self._rows[row]))
            del self._row_of[evicted]
            self._key_at[row] = key
        else:
            if row == len(self._rows):
                grown = np.empty((min(2 * row, self._capacity), self._num_perm), self._rows.dtype)
                grown[:row] = self._rows
                self._rows = grown
            self._key_at.append(key)
        self._rows[row] = values
        self._row_of[key] = row
        for table, band in zip(self._tables, bands, strict=True):
            hit = table.get(band)
            if hit is None:
                table[band] = row  # most buckets hold one row: no set for them
            elif isinstance(hit, int):
                table[band] = {hit, row}
            else:
                hit.add(row)
        self._next = (row + 1) % self._capacity

    def _unindex(self, row: int, bands: list[bytes]) -> None:
        for table, band in zip(self._tables, bands, strict=True):
            hit = table.get(band)
            if hit is None:
                continue
            if isinstance(hit, int):
                if hit == row:
                    del table[band]
            else:
                hit.discard(row)
                if len(hit) == 1:
                    table[band] = hit.pop()
                elif not hit:
                    del table[band]


def _bands(*, num_perm: int, threshold: float) -> tuple[int, int]:
    """LSH bands ``(b, r)`` whose candidates include a pair at ``threshold`` with p ≥ ``_RECALL``.

    The widest band that keeps that recall: wider bands propose fewer dissimilar candidates (less
    work per text) and fewer bands index fewer entries (less memory). datasketch's own optimiser
    balances false positives against false negatives instead, which leaves a pair exactly at the
    threshold found only about a third of the time; here the check against the stored MinHash
    values removes the false candidates, so the bands only need recall.
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm // 2 + 1):
        bands = num_perm // rows
        if bands < 2:
            break
        if 1.0 - (1.0 - threshold**rows) ** bands >= _RECALL:
            best = (bands, rows)
    return best
