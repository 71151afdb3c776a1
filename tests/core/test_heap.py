"""A settled service process: its start-up heap is frozen and young collections are rarer.

Checked in a child process: freezing the heap of the test process would keep every object
the suite creates before this test from ever being collected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tunewire.core.base import heap

PROBE = textwrap.dedent(
    """
    import gc, json
    from tunewire.core.base import heap

    state = [{"cycle": None}]
    state[0]["cycle"] = state  # start-up state that lives as long as the process
    before = gc.get_freeze_count()
    heap.settle()
    frozen = gc.get_freeze_count()
    del state
    collected = gc.collect()  # the frozen cycle is never walked, so never collected
    print(json.dumps({"before": before, "frozen": frozen, "collected": collected,
                      "threshold": gc.get_threshold()}))
    """
)


def test_settle_freezes_the_start_up_heap_and_collects_the_young_generation_less_often() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    found = json.loads(done.stdout)
    assert found["before"] == 0
    assert found["frozen"] > 1000  # the interpreter, the imports and the state above
    assert found["collected"] == 0
    assert found["threshold"][0] == heap.YOUNG_THRESHOLD
    assert found["threshold"][0] > 700  # CPython's default
