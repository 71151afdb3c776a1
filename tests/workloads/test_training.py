"""The loop: deterministic epochs, learning, and a resumed run that matches an unbroken one."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator

import peft
import pytest
import torch

from tests.support import datasets
from tunewire import samples
from tunewire.contracts.v1 import training_pb2
from tunewire.core.state import objectives
from tunewire.workloads import data, failures, models, training

LORA = objectives.Lora(r=8, alpha=16, dropout=0.1, target_modules="all-linear")
HYPER = objectives.Training(
    epochs=2, lr=3e-3, batch_size=8, max_seq_len=64, gradient_accumulation=2
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train on one torch thread, as the trainer Job beside the stack does
    (``TUNEWIRE_TRAINER__THREADS=1``): on two cores shared with other processes a second
    thread mostly waits for a core, and these few steps take 5-20 s instead of under one.
    What the tests compare (steps, losses, tensors) does not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _examples(tokenizer: object, count: int = 40) -> list[data.Encoded]:
    return [
        data.encode(
            tokenizer,
            [
                {"role": "system", "content": datasets.INSTRUCTION},
                {"role": "user", "content": f"{e['data']['subject']}\n{e['data']['body']}"},
                {"role": "assistant", "content": label},
            ],
            max_seq_len=HYPER.max_seq_len,
        )
        for e, label in samples.labelled_tickets(count, seed=5)
    ]


def _run(
    loaded: models.Loaded,
    *,
    checkpoints: list[training.Checkpoint],
    stop_after: int | None = None,
    resume: training.Checkpoint | None = None,
) -> tuple[peft.PeftModel, list[training.Report]]:
    """Train the test's run; checkpoints are kept as they would come back from S3."""
    torch.manual_seed(0)
    model = training.attach_lora(loaded.model, LORA)
    reports: list[training.Report] = []
    stop = threading.Event()

    def on_progress(report: training.Report) -> None:
        reports.append(report)
        if stop_after is not None and report.step >= stop_after:
            stop.set()

    schedule = training.Schedule(
        on_progress=on_progress,
        on_checkpoint=lambda c: checkpoints.append(training.Checkpoint.from_bytes(c.to_bytes())),
        progress_every_s=0.0,
        checkpoint_every_s=3600.0,
        stop=stop,
    )
    with torch.random.fork_rng(devices=[]):
        training.train(
            model,
            _examples(loaded.tokenizer),
            training=HYPER,
            pad_id=loaded.tokenizer.pad_token_id,
            seed=7,
            schedule=schedule,
            resume=resume,
        )
    return model, reports


def test_each_epoch_visits_every_example_once_in_a_seeded_order() -> None:
    lengths = [(i * 37) % 50 + 5 for i in range(100)]
    first = training.plan_batches(lengths, batch_size=8, seed=3, epoch=0)
    assert training.plan_batches(lengths, batch_size=8, seed=3, epoch=0) == first
    assert sorted(i for batch in first for i in batch) == list(range(100))
    assert training.plan_batches(lengths, batch_size=8, seed=3, epoch=1) != first
    assert training.plan_batches(lengths, batch_size=8, seed=4, epoch=0) != first


def test_collate_pads_to_the_longest_and_masks_the_padding() -> None:
    batch = training.collate(
        [data.Encoded([5, 6, 7], [-100, 6, 7]), data.Encoded([8], [8])], pad_id=0
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_a_run_reports_progress_and_lowers_the_loss(tiny: models.Loaded) -> None:
    checkpoints: list[training.Checkpoint] = []
    _, reports = _run(tiny, checkpoints=checkpoints)
    total = training.steps_per_epoch(40, HYPER) * HYPER.epochs
    assert [r.step for r in reports] == list(range(1, total + 1))
    assert reports[-1].total_steps == total
    assert reports[-1].epoch == pytest.approx(HYPER.epochs)
    assert reports[-1].eta_seconds == 0
    assert all(r.tokens_per_second > 0 for r in reports)
    assert reports[-1].loss < reports[0].loss
    assert [c.step for c in checkpoints] == [total // 2, total]  # at each epoch end


def test_a_resumed_run_ends_exactly_where_an_unbroken_one_does(
    model_cache: pathlib.Path,
) -> None:
    def fresh() -> models.Loaded:
        return models.load(models.TINY_LLAMA, artifacts=None, cache_dir=model_cache)

    unbroken, _ = _run(fresh(), checkpoints=[])
    saved: list[training.Checkpoint] = []
    with pytest.raises(training.Interrupted) as stopped:
        _run(fresh(), checkpoints=saved, stop_after=2)
    assert stopped.value.step == 2
    assert [c.step for c in saved] == [2]  # mid-epoch: 3 steps per epoch

    resumed, reports = _run(fresh(), checkpoints=[], resume=saved[-1])

    assert reports[0].step == 3
    expected = peft.get_peft_model_state_dict(unbroken)
    got = peft.get_peft_model_state_dict(resumed)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)
    # and training changed the adapter at all (B starts at zero)
    assert any(t.abs().sum() > 0 for n, t in got.items() if "lora_B" in n)


def test_auto_takes_the_gpu_only_when_torch_sees_one() -> None:
    assert training.choose_device("auto", cuda_available=False) == torch.device("cpu")
    assert training.choose_device("auto", cuda_available=True) == torch.device("cuda")
    assert training.choose_device("cpu", cuda_available=True) == torch.device("cpu")
    assert training.choose_device("cuda", cuda_available=True) == torch.device("cuda")


def test_asking_for_a_gpu_where_there_is_none_fails_with_advice() -> None:
    with pytest.raises(failures.WorkloadError, match="TUNEWIRE_TRAINER__DEVICE=auto") as caught:
        training.choose_device("cuda", cuda_available=False)
    reason, message = failures.classify(caught.value)
    assert reason == training_pb2.FAILURE_REASON_TRAINER_ERROR
    assert "sees no GPU" in message
    with pytest.raises(failures.WorkloadError, match="auto, cpu or cuda"):
        training.choose_device("tpu", cuda_available=True)


def test_bf16_only_on_a_gpu_that_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not training.uses_bf16(cpu)
    assert training.weights_dtype(cpu) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training.uses_bf16(cuda)
    assert training.weights_dtype(cuda) == torch.bfloat16
    assert training.weights_dtype(cpu) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not training.uses_bf16(cuda)
    assert training.weights_dtype(cuda) == torch.float32


def test_a_checkpoint_is_a_host_copy_that_later_steps_leave_alone(tiny: models.Loaded) -> None:
    """The optimizer's moments in a checkpoint are copies, not the live tensors."""
    kept: list[tuple[training.Checkpoint, bytes]] = []
    torch.manual_seed(0)
    model = training.attach_lora(tiny.model, LORA)
    training.train(
        model,
        _examples(tiny.tokenizer),
        training=HYPER,
        pad_id=tiny.tokenizer.pad_token_id,
        seed=7,
        schedule=training.Schedule(
            on_progress=lambda report: None,
            on_checkpoint=lambda c: kept.append((c, c.to_bytes())),
            checkpoint_every_s=3600.0,
        ),
    )
    (first, first_bytes), _ = kept  # one per epoch end; the second epoch ran after the first
    as_saved = training.Checkpoint.from_bytes(first_bytes)
    moments = [
        (name, value)
        for number, state in first.optimizer["state"].items()
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    ]
    assert moments
    for name, value in moments:
        assert value.device.type == "cpu", name
    for number, state in first.optimizer["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(
                value, as_saved.optimizer["state"][number][name], rtol=0, atol=0
            )
