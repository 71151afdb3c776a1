"""The training loop: LoRA fine-tuning of a causal LM that resumes exactly where it stopped.

The loop knows nothing of S3 or Kafka: it takes encoded examples and the objective's
training settings, and hands progress reports and checkpoints to callbacks. Everything that
decides what a step does — the order of examples in an epoch, the batches, the learning
rate, dropout's random numbers — is derived from the seed and the step count, or stored in
the checkpoint, so a run resumed from step N takes the same steps N+1… as one never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import peft
import torch

from tunewire.core.state import objectives
from tunewire.workloads import data, failures

log = logging.getLogger(__name__)

_WARMUP_FRACTION = 0.05
_MAX_GRAD_NORM = 1.0
# Batches are formed within windows of this many batches' worth of shuffled examples,
# sorted by length: little padding, while each epoch still mixes the whole dataset.
_BUCKET_BATCHES = 16


class Interrupted(Exception):
    """Training stopped on request (SIGTERM: a pre-empted pod) after saving a checkpoint."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped on request at step {step}; the next attempt resumes there")
        self.step = step


@dataclasses.dataclass(frozen=True)
class Report:
    """A progress report: where the run is, how fast it goes."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    """Mean training loss of the steps since the previous report."""
    tokens_per_second: float
    """Throughput since the previous report (tokens of prompt and answer, no padding)."""
    eta_seconds: float


@dataclasses.dataclass
class Totals:
    """Running sums over the whole run, across attempts (kept in checkpoints)."""

    loss_sum: float = 0.0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class Checkpoint:
    """Everything needed to continue a run after ``step`` optimizer steps."""

    step: int
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    totals: Totals

    def to_bytes(self) -> bytes:
        """One file holding the whole state (``torch.save`` of tensors and plain values)."""
        buffer = io.BytesIO()
        torch.save({**dataclasses.asdict(self), "totals": dataclasses.asdict(self.totals)}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Checkpoint:
        """Read what :meth:`to_bytes` wrote (tensors and plain values only: no pickled code)."""
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        return cls(**{**state, "totals": Totals(**state["totals"])})


@dataclasses.dataclass(frozen=True)
class Result:
    """What a finished run reports in its metrics."""

    train_loss: float
    runtime_seconds: float
    """Seconds spent training, summed over attempts (loading and uploads excluded)."""
    tokens: int
    tokens_per_second: float
    steps: int
    epochs: int
    examples: int
    trainable_params: int

    def document(self) -> dict[str, float | int]:
        """The run's ``metrics.json``."""
        return {
            "train_loss": self.train_loss,
            "train_runtime_seconds": self.runtime_seconds,
            "tokens_per_second": self.tokens_per_second,
            "tokens": self.tokens,
            "steps": self.steps,
            "epochs": self.epochs,
            "examples": self.examples,
            "trainable_params": self.trainable_params,
        }

    def metrics(self) -> dict[str, float]:
        """The same figures as the Succeeded event's metrics map carries them (doubles)."""
        return {name: float(value) for name, value in self.document().items()}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How often the loop reports and checkpoints, and who hears about it."""

    on_progress: Callable[[Report], None]
    on_checkpoint: Callable[[Checkpoint], None]
    progress_every_s: float = 5.0
    checkpoint_every_s: float = 60.0
    stop: threading.Event | None = None
    """Set to stop at the next step boundary, after a checkpoint (raises :class:`Interrupted`)."""


def choose_device(wanted: str, *, cuda_available: bool | None = None) -> torch.device:
    """The device the trainer runs on, for ``trainer.device`` (``auto``, ``cpu`` or ``cuda``).

    ``auto`` takes the GPU when torch sees one. ``cuda`` on a machine where torch sees none
    fails here, with a message a person can act on, instead of later inside ``model.to``
    with torch's "not compiled with CUDA enabled" assertion, which names no setting.
    ``cuda_available`` defaults to :func:`torch.cuda.is_available`.
    """
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if wanted == "auto":
        return torch.device("cuda" if available else "cpu")
    if wanted == "cuda" and not available:
        raise failures.WorkloadError(
            f"trainer.device is 'cuda' but torch {torch.__version__} sees no GPU here; run "
            "the Job on a GPU node (training.gpu >= 1) or set TUNEWIRE_TRAINER__DEVICE=auto"
        )
    if wanted not in ("cpu", "cuda"):
        raise failures.WorkloadError(f"trainer.device must be auto, cpu or cuda, not {wanted!r}")
    return torch.device(wanted)


def uses_bf16(device: torch.device) -> bool:
    """Whether training on ``device`` runs in bf16 autocast (a GPU that supports bf16).

    The one decision for both the loop's autocast and the base weights' dtype
    (:func:`weights_dtype`), so the two never disagree.
    """
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def weights_dtype(device: torch.device) -> torch.dtype:
    """The dtype to load the (frozen) base model in: bf16 where the loop autocasts to bf16.

    Frozen weights in bf16 halve their memory and cost no precision under bf16 autocast;
    the adapter's weights, the only ones trained, stay float32 (peft upcasts them) and so
    does the optimizer state.
    """
    return torch.bfloat16 if uses_bf16(device) else torch.float32


def attach_lora(model: torch.nn.Module, lora: objectives.Lora) -> peft.PeftModel:
    """Wrap the base model with a fresh LoRA adapter; only the adapter's weights train."""
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    return peft.get_peft_model(model, config)


def steps_per_epoch(examples: int, training: objectives.Training) -> int:
    """Optimizer steps of one epoch (the last one may accumulate fewer batches)."""
    batches = math.ceil(examples / training.batch_size)
    return math.ceil(batches / training.gradient_accumulation)


def plan_batches(
    lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """The batches of one epoch as lists of example indices; the same for the same inputs.

    The examples are shuffled with a generator seeded by ``seed`` and ``epoch``, sorted by
    length within windows of a few batches (so a batch holds examples of similar length and
    little padding), and the batches are shuffled again so lengths do not trend.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * _BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def collate(examples: Sequence[data.Encoded], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch on the right to its longest example; padding is masked out of the loss."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), data.IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example.input_ids)
        input_ids[row, :size] = torch.tensor(example.input_ids)
        labels[row, :size] = torch.tensor(example.labels)
        attention_mask[row, :size] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def train(
    model: peft.PeftModel,
    examples: Sequence[data.Encoded],
    *,
    training: objectives.Training,
    pad_id: int,
    seed: int,
    schedule: Schedule,
    resume: Checkpoint | None = None,
    device: torch.device | None = None,
) -> Result:
    """Train the adapter of ``model`` for ``training.epochs`` epochs, from ``resume`` if given.

    AdamW on the adapter's weights, linear warm-up then linear decay, gradient clipping,
    gradient accumulation, and bf16 autocast where the GPU supports it. Batches go to
    ``device``, by default the device the model's weights are on (a model the caller moved
    to a GPU trains there without saying so twice).
    """
    device = device if device is not None else next(model.parameters()).device
    per_epoch = steps_per_epoch(len(examples), training)
    total_steps = per_epoch * training.epochs
    accumulation = training.gradient_accumulation
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=training.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _linear_warmup_decay(total_steps, max(1, int(total_steps * _WARMUP_FRACTION)))
    )
    totals = Totals()
    step = 0
    if resume is not None:
        peft.set_peft_model_state_dict(model, resume.adapter)
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        _set_rng(resume.rng)
        totals = dataclasses.replace(resume.totals)
        step = resume.step
    else:
        torch.manual_seed(seed)
    lengths = [len(e.input_ids) for e in examples]
    bf16 = uses_bf16(device)
    meter = _Meter(start_step=step, total_steps=total_steps, per_epoch=per_epoch)
    last_checkpoint = time.monotonic()

    def checkpoint() -> None:
        nonlocal last_checkpoint
        schedule.on_checkpoint(
            Checkpoint(
                step=step,
                adapter={
                    k: v.detach().cpu().clone()
                    for k, v in peft.get_peft_model_state_dict(model).items()
                },
                optimizer=_host_copy(optimizer.state_dict()),
                scheduler=scheduler.state_dict(),
                rng=_get_rng(),
                totals=dataclasses.replace(totals),
            )
        )
        last_checkpoint = time.monotonic()

    model.train()
    while step < total_steps:
        epoch, within = divmod(step, per_epoch)
        batches = plan_batches(lengths, batch_size=training.batch_size, seed=seed, epoch=epoch)
        for first in range(within * accumulation, len(batches), accumulation):
            group = batches[first : first + accumulation]
            started = time.monotonic()
            loss_sum, tokens = 0.0, 0
            for indices in group:
                batch = collate([examples[i] for i in indices], pad_id=pad_id)
                tokens += sum(lengths[i] for i in indices)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                (loss / len(group)).backward()
                loss_sum += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(parameters, _MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.monotonic() - started
            step_loss = loss_sum / len(group)
            totals.loss_sum += step_loss
            totals.steps += 1
            totals.tokens += tokens
            totals.seconds += elapsed
            meter.add(step_loss, tokens)
            if meter.due(schedule.progress_every_s) or step == total_steps:
                schedule.on_progress(meter.report(step))
            stopping = schedule.stop is not None and schedule.stop.is_set() and step < total_steps
            epoch_end = step % per_epoch == 0
            if (
                stopping
                or epoch_end
                or time.monotonic() - last_checkpoint >= schedule.checkpoint_every_s
            ):
                checkpoint()
            if stopping:
                raise Interrupted(step)
            if epoch_end:
                break
    trainable = sum(p.numel() for p in parameters)
    return Result(
        train_loss=totals.loss_sum / max(1, totals.steps),
        runtime_seconds=totals.seconds,
        tokens=totals.tokens,
        tokens_per_second=totals.tokens / totals.seconds if totals.seconds else 0.0,
        steps=total_steps,
        epochs=training.epochs,
        examples=len(examples),
        trainable_params=trainable,
    )


class _Meter:
    """Loss and throughput since the last report, and the time left at this attempt's pace."""

    def __init__(self, *, start_step: int, total_steps: int, per_epoch: int) -> None:
        self._start_step = start_step
        self._total_steps = total_steps
        self._per_epoch = per_epoch
        self._began = self._since = time.monotonic()
        self._losses: list[float] = []
        self._tokens = 0

    def add(self, loss: float, tokens: int) -> None:
        self._losses.append(loss)
        self._tokens += tokens

    def due(self, every_s: float) -> bool:
        return time.monotonic() - self._since >= every_s

    def report(self, step: int) -> Report:
        now = time.monotonic()
        done = step - self._start_step
        pace = (now - self._began) / done if done else 0.0
        report = Report(
            step=step,
            total_steps=self._total_steps,
            epoch=step / self._per_epoch,
            loss=sum(self._losses) / len(self._losses) if self._losses else 0.0,
            tokens_per_second=self._tokens / max(now - self._since, 1e-9),
            eta_seconds=pace * (self._total_steps - step),
        )
        self._since, self._losses, self._tokens = now, [], 0
        return report


def _linear_warmup_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _host_copy(state: Any) -> Any:
    """``state`` with every tensor copied to host memory (containers rebuilt, rest kept).

    ``optimizer.state_dict()`` hands out the live moment tensors, which the next step
    updates in place (on the GPU, too): a checkpoint holding them would change after it was
    taken. Like the adapter's weights, its optimizer state is therefore a host copy, taken
    at the step boundary, and the same wherever the run trained.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _host_copy(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_host_copy(value) for value in state)
    return state


def _get_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # fewer GPUs than when it was saved
            torch.cuda.set_rng_state_all(state["cuda"])
