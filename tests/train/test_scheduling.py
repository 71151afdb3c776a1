"""The order in which queued runs get a slot: limit, GPU budget, fairness."""

from __future__ import annotations

import datetime

from tunewire.train import runs, scheduling

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def run(objective: str, n: int, *, gpus: int = 1, status: runs.RunStatus = "queued") -> runs.Run:
    return runs.Run(
        run_id=f"{objective}-{n}",
        objective=objective,
        objective_version=1,
        dataset_id=f"ds-{n}",
        dataset_uri="s3://b/datasets/x/",
        status=status,
        gpus=gpus,
        created_at=T0 + datetime.timedelta(seconds=n),
    )


def ids(chosen: list[runs.Run]) -> list[str]:
    return [r.run_id for r in chosen]


def test_the_limit_counts_runs_already_training() -> None:
    queued = [run("a", 1), run("a", 2), run("a", 3)]
    busy = [run("b", 0, status="running")]
    assert ids(scheduling.pick(queued, busy, max_running=3, gpu_budget=0)) == ["a-1", "a-2"]
    assert scheduling.pick(queued, [*busy, busy[0]], max_running=2, gpu_budget=0) == []


def test_a_busy_objective_does_not_starve_the_others() -> None:
    queued = [run("a", 1), run("a", 2), run("a", 3), run("b", 4), run("c", 5)]
    chosen = scheduling.pick(queued, [], max_running=3, gpu_budget=0)
    assert ids(chosen) == ["a-1", "b-4", "c-5"]


def test_the_objective_with_fewer_running_goes_first() -> None:
    queued = [run("a", 1), run("b", 2)]
    running = [run("a", 0, status="running")]
    assert ids(scheduling.pick(queued, running, max_running=2, gpu_budget=0)) == ["b-2"]


def test_within_an_objective_runs_start_in_queue_order() -> None:
    queued = [run("a", 3), run("a", 1), run("a", 2)]
    assert ids(scheduling.pick(queued, [], max_running=3, gpu_budget=0)) == ["a-1", "a-2", "a-3"]


def test_the_gpu_budget_holds_and_a_smaller_run_may_fit() -> None:
    queued = [run("a", 1, gpus=4), run("b", 2, gpus=1)]
    running = [run("c", 0, gpus=2, status="running")]
    chosen = scheduling.pick(queued, running, max_running=10, gpu_budget=4)
    assert ids(chosen) == ["b-2"]
    assert scheduling.pick(queued, running, max_running=10, gpu_budget=0) != []
