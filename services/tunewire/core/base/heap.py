"""Tunes the cyclic garbage collector for a long-running service process.

CPython's collector runs after every 700 net allocations of container objects and, now
and then, walks every container in the process. A service holds a large, long-lived heap
(imported modules, schemas, state restored from S3) and allocates several containers per
message, so at thousands of messages a second those walks take a large share of its CPU
(label's figure is in ``bench/README.md``). :func:`settle` moves what exists after start-up
out of the collector's sight (``gc.freeze``: it is never garbage) and collects the young
generation less often. Reference counting still frees nearly everything at once; only
reference cycles wait longer, and there are few of them on the hot paths.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Net container allocations between young collections (CPython's default: 700)."""


def settle() -> None:
    """Freeze the heap built so far and collect the young generation less often.

    Call once the process has built its long-lived state, before its loops start.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
