"""Which queued runs start next: a concurrency limit, a GPU budget, fair across objectives.

Pure logic, so the order is easy to test. Each free slot goes to the objective with the
fewest runs training (ties to the one whose oldest queued run waited longest), and within an
objective runs start in the order they were queued. One busy objective can therefore never
starve the others, which is what a shared GPU pool needs.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from tunewire.train import runs


def pick(
    queued: Sequence[runs.Run],
    running: Sequence[runs.Run],
    *,
    max_running: int,
    gpu_budget: int,
) -> list[runs.Run]:
    """The queued runs to start now, in start order."""
    waiting: dict[str, collections.deque[runs.Run]] = collections.defaultdict(collections.deque)
    for run in sorted(queued, key=lambda r: (r.created_at, r.run_id)):
        waiting[run.objective].append(run)
    busy = collections.Counter(run.objective for run in running)
    gpus_used = sum(run.gpus for run in running)
    chosen: list[runs.Run] = []
    while waiting and len(running) + len(chosen) < max_running:
        fitting = [
            name
            for name, queue in waiting.items()
            if not gpu_budget or gpus_used + queue[0].gpus <= gpu_budget
        ]
        if not fitting:
            break
        name = min(fitting, key=lambda n: (busy[n], waiting[n][0].created_at, n))
        run = waiting[name].popleft()
        if not waiting[name]:
            del waiting[name]
        chosen.append(run)
        busy[name] += 1
        gpus_used += run.gpus
    return chosen
