"""The near-duplicate index: MinHash LSH over word shingles, looked up a chunk at a time.

Whether a text is a near-copy depends on every text admitted before it, so the index is asked
in stream order, one text at a time. Asking it that way costs a dozen random memory reads per
text (one per LSH band, and as many again to insert and evict), each one a cache miss once the
index is large; that was most of the label consumer's time. Here the LSH tables are sorted
numpy arrays instead of dicts, and a caller that knows which texts come next (a worker's chunk
of prepared records) announces them with :meth:`NearDuplicates.expect`: their candidates are
then found and checked for the whole chunk in a few vectorised steps, and each text's turn only
reads the answer, corrected for what was admitted since. The answers are exactly those of
asking one text at a time (the tests compare both against datasketch's LSH).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from tunewire.label import preprocess

_RECALL = 0.95
"""Probability that the LSH proposes a pair exactly at the threshold (see :func:`_bands`)."""
_BAND_HASH_SEED = 7
"""Seed of the band hash's multipliers; any fixed value, so every replica and restart agrees."""
_PENDING_MAX = 1024
"""Texts indexed since the sorted levels were last updated, before they join the recent level."""
_RECENT_MAX = 4096
"""Texts in the recent level before it merges into the main level (a copy of the whole index),
or a quarter of the capacity when that is fewer."""


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
    evicted, so a near-duplicate of something evicted is no longer found. A key stands for one
    text (callers use a hash of it). Not thread-safe: use one instance per consumer.
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
        self._num_perm = num_perm
        self._capacity = capacity
        # Matches needed among num_perm values for an estimated Jaccard ≥ threshold.
        self._min_equal = math.ceil(threshold * num_perm - 1e-9)
        self._hasher = preprocess.MinHasher(num_perm=num_perm, shingle_words=shingle_words)
        bands, rows = _bands(num_perm=num_perm, threshold=threshold)
        self._bands = _BandHash(bands=bands, rows=rows)
        # Every text indexed gets the next sequence number; the live ones are the last
        # ``capacity``, and the MinHash values of sequence number s are row s % capacity of one
        # ring (grown by doubling up to ``capacity``), so evicting the oldest is overwriting it.
        self._rows = np.empty((min(capacity, 1024), num_perm), dtype=np.uint32)
        self._key_at: list[str] = []
        self._seq_of: dict[str, int] = {}
        self._count = 0
        # The LSH tables, as (band hash, sequence number) pairs sorted by hash: a large level
        # rebuilt now and then, a recent one that new texts join in bulk, and the texts indexed
        # since, not yet in either. Evicted entries stay until the next rebuild and are skipped
        # by their sequence number.
        self._main = _Level.empty()
        self._recent = _Level.empty()
        self._pending_hashes = np.empty((_PENDING_MAX, bands), dtype=np.uint64)
        self._pending_seqs = np.empty(_PENDING_MAX, dtype=np.int64)
        self._pending = 0
        self._recent_max = max(1, min(_RECENT_MAX, capacity // 4)) * bands
        self._expectation: _Expectation | None = None

    @property
    def hasher(self) -> preprocess.MinHasher:
        """What turns a text into the MinHash signature this index compares."""
        return self._hasher

    def __len__(self) -> int:
        return len(self._seq_of)

    def __contains__(self, key: object) -> bool:
        return key in self._seq_of

    def expect(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Look up the texts (key, signature) that :meth:`seen_or_add` is about to be asked for.

        Their turns then cost a few dict lookups each instead of a search of the index. Any
        order, subset or interleaving of calls still gets the answers it would have without
        this: a text that was not announced, or is asked for twice, is searched for as usual.
        Replaces the previous announcement.
        """
        self._expectation = None
        self._flush_pending()
        position: dict[str, int] = {}
        signatures: list[bytes] = []
        width = 4 * self._num_perm
        for key, signature in items:
            if key not in position:
                if len(signature) != width:
                    self._hasher.from_signature(signature)  # raises, saying why
                position[key] = len(signatures)
                signatures.append(signature)
        if not signatures:
            return
        values = np.frombuffer(b"".join(signatures), dtype=np.uint32).reshape(len(signatures), -1)
        hashes = self._bands.of(values)
        flat = hashes.ravel()
        order = np.argsort(flat)
        ordered = flat[order]
        expectation = _Expectation(
            since=self._count,
            position=position,
            keys=list(position),
            values=values,
            hashes=hashes,
            indexed=[[] for _ in signatures],
            peers=[[] for _ in signatures],
        )
        self._find_indexed(expectation, order, ordered)
        self._find_peers(expectation, order, ordered)
        self._expectation = expectation

    def seen_or_add(self, key: str, text: str, *, signature: bytes | None = None) -> str | None:
        """The key of an indexed near-duplicate of ``text``, else index it and return None.

        When several indexed texts qualify, the most similar wins (the smaller key on a tie, so
        every process agrees). The entry under ``key`` itself is never reported, so a
        redelivered record does not become a duplicate of itself; a key already indexed is not
        indexed again. ``signature``, when given, is ``text``'s signature from an equal
        :class:`preprocess.MinHasher` (computed elsewhere, e.g. in a worker process): the answer
        is the same as without it, only cheaper here.
        """
        expectation = self._expectation
        at = None if expectation is None else expectation.position.pop(key, None)
        if expectation is not None and at is not None:
            values, hashes = expectation.values[at], expectation.hashes[at]
            scored = self._scored_expected(expectation, at, key)
        else:
            if signature is None:
                values = self._hasher.values(text)
            else:
                values = self._hasher.from_signature(signature)
            hashes = self._bands.of(values[None])[0]
            scored = self._scored_searched(key, values, hashes)
        if scored:
            top = max(scored.values())
            return min(candidate for candidate, equal in scored.items() if equal == top)
        if key not in self._seq_of:
            seq = self._index(key, values, hashes)
            if expectation is not None and at is None:
                expectation.strays.append(seq)
        return None

    # -- answering ---------------------------------------------------------------------------

    def _scored_expected(self, expectation: _Expectation, at: int, key: str) -> dict[str, int]:
        """Qualifying candidates of an announced text: those found when it was announced that
        are still indexed, the announced texts indexed since, and anything else indexed since."""
        live_from = self._count - self._capacity
        own = self._seq_of.get(key)
        scored = {
            self._key_at[seq % self._capacity]: equal
            for seq, equal in expectation.indexed[at]
            if seq >= live_from and seq != own
        }
        for peer, equal in expectation.peers[at]:
            if self._seq_of.get(peer, -1) >= expectation.since:
                scored[peer] = equal
        if expectation.strays:
            strays = np.asarray(expectation.strays, dtype=np.int64)
            strays = strays[strays >= live_from]
            stray_hashes = self._bands.of(self._rows[strays % self._capacity])
            shared = (stray_hashes == expectation.hashes[at]).any(axis=1)
            scored.update(self._scored(expectation.values[at], strays[shared], own))
        return scored

    def _scored_searched(self, key: str, values: np.ndarray, hashes: np.ndarray) -> dict[str, int]:
        """Qualifying candidates of a text nobody announced: a search of every level."""
        order = np.argsort(hashes)
        found = [level.hits(hashes[order], order)[1] for level in (self._main, self._recent)]
        pending = self._pending_hashes[: self._pending] == hashes
        found.append(self._pending_seqs[: self._pending][pending.any(axis=1)])
        seqs = np.unique(np.concatenate(found))
        seqs = seqs[seqs >= self._count - self._capacity]
        return self._scored(values, seqs, self._seq_of.get(key))

    def _scored(self, values: np.ndarray, seqs: np.ndarray, own: int | None) -> dict[str, int]:
        """The live sequence numbers ``seqs`` (no duplicates) that qualify, by key."""
        if own is not None:
            seqs = seqs[seqs != own]
        if not len(seqs):
            return {}
        equal = (self._rows[seqs % self._capacity] == values).sum(axis=1)
        keep = equal >= self._min_equal
        return {
            self._key_at[seq % self._capacity]: count
            for seq, count in zip(seqs[keep].tolist(), equal[keep].tolist(), strict=True)
        }

    # -- announcing --------------------------------------------------------------------------

    def _find_indexed(
        self, expectation: _Expectation, order: np.ndarray, ordered: np.ndarray
    ) -> None:
        """Each announced text's qualifying candidates among the texts indexed now (from its
        band hashes in ascending order, ``ordered``, and their places, ``order``)."""
        found = [level.hits(ordered, order) for level in (self._main, self._recent)]
        spots = np.concatenate([spot for spot, _ in found])
        seqs = np.concatenate([seq for _, seq in found])
        live = seqs >= expectation.since - self._capacity
        items, seqs = spots[live] // self._bands.count, seqs[live]
        if not len(seqs):
            return
        # A pair sharing several bands is found (and checked) once per band: cheaper than
        # sorting the pairs to drop the repeats, and the answer keeps one.
        equal = (self._rows[seqs % self._capacity] == expectation.values[items]).sum(axis=1)
        keep = equal >= self._min_equal
        for item, seq, count in zip(
            items[keep].tolist(), seqs[keep].tolist(), equal[keep].tolist(), strict=True
        ):
            expectation.indexed[item].append((seq, count))

    def _find_peers(
        self, expectation: _Expectation, order: np.ndarray, ordered: np.ndarray
    ) -> None:
        """Each announced text's qualifying candidates among the other announced texts."""
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        lengths = np.diff(np.append(starts, len(ordered)))
        run_of = np.repeat(np.arange(len(starts)), lengths)
        spots = np.flatnonzero(lengths[run_of] > 1)
        if not len(spots):
            return
        # Every ordered pair of spots within each run of equal band hashes.
        run_start, run_length = starts[run_of[spots]], lengths[run_of[spots]]
        total = int(run_length.sum())
        first = np.repeat(spots, run_length)
        offset = np.arange(total) - np.repeat(np.cumsum(run_length) - run_length, run_length)
        second = np.repeat(run_start, run_length) + offset
        one, other = order[first] // self._bands.count, order[second] // self._bands.count
        apart = one != other
        one, other = one[apart], other[apart]
        equal = (expectation.values[one] == expectation.values[other]).sum(axis=1)
        keep = equal >= self._min_equal
        keys = expectation.keys
        for item, peer, matches in zip(
            one[keep].tolist(), other[keep].tolist(), equal[keep].tolist(), strict=True
        ):
            expectation.peers[item].append((keys[peer], matches))

    # -- indexing ----------------------------------------------------------------------------

    def _index(self, key: str, values: np.ndarray, hashes: np.ndarray) -> int:
        """Index a text under the next sequence number (evicting the oldest); return it."""
        seq = self._count
        row = seq % self._capacity
        if seq >= self._capacity:
            del self._seq_of[self._key_at[row]]
            self._key_at[row] = key
        else:
            if row == len(self._rows):
                grown = np.empty((min(2 * row, self._capacity), self._num_perm), self._rows.dtype)
                grown[:row] = self._rows
                self._rows = grown
            self._key_at.append(key)
        self._rows[row] = values
        self._seq_of[key] = seq
        self._count = seq + 1
        self._pending_hashes[self._pending] = hashes
        self._pending_seqs[self._pending] = seq
        self._pending += 1
        if self._pending == _PENDING_MAX:
            self._flush_pending()
        return seq

    def _flush_pending(self) -> None:
        """Move the texts indexed lately into the recent level (and that, when large, into the
        main one, dropping what was evicted)."""
        if not self._pending:
            return
        bands = self._bands.count
        self._recent = self._recent.add(
            self._pending_hashes[: self._pending].ravel(),
            np.repeat(self._pending_seqs[: self._pending], bands),
        )
        self._pending = 0
        if len(self._recent) >= self._recent_max:
            merged = self._main.add(self._recent.hashes, self._recent.seqs, presorted=True)
            self._main = merged.live(self._count - self._capacity)
            self._recent = _Level.empty()


@dataclasses.dataclass
class _Expectation:
    """Texts announced by :meth:`NearDuplicates.expect`, with what was found for them."""

    since: int
    """The index's count of texts indexed when they were announced."""
    position: dict[str, int]
    """Announced keys not asked for yet, and their place in the lists below."""
    keys: list[str]
    values: np.ndarray
    hashes: np.ndarray
    indexed: list[list[tuple[int, int]]]
    """Qualifying candidates indexed before ``since``: (sequence number, values equal)."""
    peers: list[list[tuple[str, int]]]
    """Qualifying candidates among the announced texts: (key, values equal)."""
    strays: list[int] = dataclasses.field(default_factory=list)
    """Sequence numbers of texts indexed since that were not announced."""


@dataclasses.dataclass(frozen=True)
class _Level:
    """LSH entries sorted by band hash: (hash, sequence number) pairs."""

    hashes: np.ndarray
    seqs: np.ndarray

    @classmethod
    def empty(cls) -> _Level:
        return cls(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.hashes)

    def add(self, hashes: np.ndarray, seqs: np.ndarray, *, presorted: bool = False) -> _Level:
        """This level with more entries, still sorted (a merge, linear in the total)."""
        if not presorted:
            order = np.argsort(hashes, kind="stable")
            hashes, seqs = hashes[order], seqs[order]
        at = np.searchsorted(self.hashes, hashes, side="right")
        return _Level(np.insert(self.hashes, at, hashes), np.insert(self.seqs, at, seqs))

    def live(self, live_from: int) -> _Level:
        """This level without the entries of evicted texts."""
        keep = self.seqs >= live_from
        return self if keep.all() else _Level(self.hashes[keep], self.seqs[keep])

    def hits(self, ordered: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every entry whose hash equals one of some queries: (place of the query, seq) pairs.

        ``ordered`` holds the queries in ascending order and ``order`` their places. Searching
        in order walks the level's memory once instead of at random (see bench/README.md for
        the figure); most find nothing.
        """
        if not len(self.hashes):
            return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.int64)
        low = np.searchsorted(self.hashes, ordered, side="left")
        found = self.hashes[np.minimum(low, len(self.hashes) - 1)] == ordered
        order, ordered, low = order[found], ordered[found], low[found]
        counts = np.searchsorted(self.hashes, ordered, side="right") - low
        total = int(counts.sum())
        spots = np.repeat(order, counts)
        run_first = np.cumsum(counts) - counts
        where = np.repeat(low - run_first, counts) + np.arange(total)
        return spots, self.seqs[where]


class _BandHash:
    """Each LSH band's MinHash values hashed to one 64-bit number (a key of the LSH tables).

    A random linear combination modulo 2**64, with a different offset per band: two different
    bands collide with probability about 2**-64, and a collision only adds a candidate that the
    check against the stored values then judges like any other.
    """

    def __init__(self, *, bands: int, rows: int) -> None:
        self.count = bands
        self._span = bands * rows
        self._rows = rows
        rng = np.random.default_rng(_BAND_HASH_SEED)
        self._multipliers = rng.integers(0, 2**64, size=rows, dtype=np.uint64) | np.uint64(1)
        self._offsets = rng.integers(0, 2**64, size=bands, dtype=np.uint64)

    def of(self, values: np.ndarray) -> np.ndarray:
        """(texts, bands) band hashes of (texts, num_perm) MinHash values."""
        span = values[:, : self._span].reshape(len(values), self.count, self._rows)
        hashed: np.ndarray = span.astype(np.uint64) @ self._multipliers
        hashed += self._offsets
        return hashed


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
