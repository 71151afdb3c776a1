"""The trainer on a GPU: throughput, peak memory, the loss, and a checkpoint resumed there.

Run ``PYTHONPATH=services python bench/gpu_trainer.py [--device auto|cuda|cpu] [--big]``
(``.venv/bin/python bench/gpu_trainer.py --device cpu`` here). It prints what it does and
its last line is one JSON object::

    {"bench": "gpu_trainer", "device": "cuda", "device_name": ..., "runs": {...},
     "resume": {"ok": true, ...}, "ok": true, ...}

What it runs, all through :func:`training.train` as the trainer workload calls it:

- ``worker``: the built-in model (``builtin://tiny-llama``, built into a temporary cache)
  loaded the way the trainer workload loads it — on :func:`training.choose_device`'s device,
  in :func:`training.weights_dtype` (bf16 on a GPU that has it) — with the sample
  objective's ``lora`` and ``training`` settings (``epochs`` from ``--epochs``) on
  ``--examples`` sample tickets. Tokens per second, peak GPU memory
  (``torch.cuda.max_memory_allocated``), the loss of the first and last steps, and every
  checkpoint serialised as for the upload.
- ``repeat``: the same run again, on a fresh model: how far two identical runs drift apart
  on this device, the yardstick for the next check.
- ``interrupted`` and ``resumed``: the same run stopped half-way through its last epoch
  (the stop event, as SIGTERM sets it), then continued on a fresh model from the bytes of
  the checkpoint the stop wrote (read back with ``map_location="cpu"``, as from S3). The
  resumed run must start at the next step, end at the last, report the unbroken run's
  losses for the same steps, and end with the unbroken run's adapter (within ``--atol`` or
  four times the drift of ``repeat``: GPU kernels need not add in the same order twice).
- ``fp32_default_device``: the built-in model in float32 on the same device, with no
  ``device`` passed to :func:`training.train` (it must train where the model is).
- ``big`` (``--big``): a Llama-architecture model of TinyLlama-1.1B's shape (22 layers,
  2048 wide, 32 heads, 4 KV heads; the built-in tokenizer, so a 4096-token vocabulary),
  random weights made on the device in its weights dtype, ``--big-epochs`` epochs in
  batches of ``--big-batch``: throughput where the GPU, not Python, is the limit.
  ``approx_tflops`` counts 4 x parameters per token (forward and the activations'
  backward; the frozen weights get no gradient), attention excluded. Its loss is reported,
  not checked: random weights and the sample objective's learning rate promise nothing.

The first run on a GPU pays for CUDA's and cuBLAS's start, so an untimed epoch comes
first. No S3, no Kafka: only the loop and model loading are imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import peft
import torch
import transformers

from tunewire import samples
from tunewire.core.state import objectives
from tunewire.workloads import data, models, training

_quiet = False


def say(message: str) -> None:
    if not _quiet:
        print(message, flush=True)


def encoded_examples(
    tokenizer: Any, spec: objectives.ObjectiveSpec, count: int, max_seq_len: int
) -> list[data.Encoded]:
    system = objectives.instruction(spec)
    return [
        data.encode(
            tokenizer,
            [
                {"role": "system", "content": system},
                {"role": "user", "content": f"{event['data']['subject']}\n{event['data']['body']}"},
                {"role": "assistant", "content": label},
            ],
            max_seq_len=max_seq_len,
        )
        for event, label in samples.labelled_tickets(count, seed=21)
    ]


@dataclasses.dataclass
class Run:
    """What one call of :func:`training.train` did."""

    seconds: float
    reports: list[training.Report]
    checkpoints: list[bytes]
    peak_bytes: int | None
    adapter: dict[str, torch.Tensor]
    result: training.Result | None
    interrupted_at: int | None = None
    checkpoint_s: float = 0.0

    def summary(self, trainable: int | None = None) -> dict[str, Any]:
        losses = [r.loss for r in self.reports]
        out: dict[str, Any] = {
            "wall_s": round(self.seconds, 3),
            "steps_reported": [self.reports[0].step, self.reports[-1].step] if losses else [],
            "loss_first": round(losses[0], 4) if losses else None,
            "loss_last": round(losses[-1], 4) if losses else None,
            "loss_min": round(min(losses), 4) if losses else None,
            "peak_gpu_mib": None if self.peak_bytes is None else round(self.peak_bytes / 2**20, 1),
            "checkpoints": len(self.checkpoints),
            "checkpoint_bytes": len(self.checkpoints[-1]) if self.checkpoints else 0,
            "checkpoint_serialise_s": round(self.checkpoint_s, 3),
        }
        if self.result is not None:
            out.update(
                tokens=self.result.tokens,
                tokens_per_s=round(self.result.tokens_per_second, 1),
                train_loss=round(self.result.train_loss, 4),
                trainable_params=self.result.trainable_params,
            )
        if self.interrupted_at is not None:
            out["interrupted_at"] = self.interrupted_at
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_once(
    model: peft.PeftModel,
    encoded: list[data.Encoded],
    *,
    hyper: objectives.Training,
    pad_id: int,
    device: torch.device,
    pass_device: bool = True,
    stop_at: int | None = None,
    resume: training.Checkpoint | None = None,
) -> Run:
    """One :func:`training.train` call with a report every step and checkpoints as bytes."""
    reports: list[training.Report] = []
    checkpoints: list[bytes] = []
    stop = threading.Event()
    serialise_s = 0.0

    def on_progress(report: training.Report) -> None:
        reports.append(report)
        if stop_at is not None and report.step >= stop_at:
            stop.set()

    def on_checkpoint(checkpoint: training.Checkpoint) -> None:
        nonlocal serialise_s
        started = time.perf_counter()
        checkpoints.append(checkpoint.to_bytes())
        serialise_s += time.perf_counter() - started

    schedule = training.Schedule(
        on_progress=on_progress,
        on_checkpoint=on_checkpoint,
        progress_every_s=0.0,
        checkpoint_every_s=3600.0,
        stop=stop,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    started = time.perf_counter()
    result: training.Result | None = None
    interrupted: int | None = None
    try:
        result = training.train(
            model,
            encoded,
            training=hyper,
            pad_id=pad_id,
            seed=0,
            schedule=schedule,
            resume=resume,
            device=device if pass_device else None,
        )
    except training.Interrupted as exc:
        interrupted = exc.step
    sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    adapter = {
        k: v.detach().float().cpu() for k, v in peft.get_peft_model_state_dict(model).items()
    }
    return Run(
        seconds=seconds,
        reports=reports,
        checkpoints=checkpoints,
        peak_bytes=peak,
        adapter=adapter,
        result=result,
        interrupted_at=interrupted,
        checkpoint_s=serialise_s,
    )


def differences(first: Run, second: Run) -> tuple[float, float]:
    """Largest differences of two runs: per-step loss (steps both report), adapter weight."""
    by_step = {r.step: r.loss for r in first.reports}
    loss = max(
        (abs(r.loss - by_step[r.step]) for r in second.reports if r.step in by_step),
        default=math.inf,
    )
    weight = max(
        float((second.adapter[name] - tensor).abs().max()) for name, tensor in first.adapter.items()
    )
    return loss, weight


def compare_resume(
    unbroken: Run, repeat: Run, resumed: Run, *, stop_at: int, total: int, atol: float
) -> dict[str, Any]:
    """Whether the resumed run took the unbroken run's steps and reached its adapter.

    ``repeat`` is the unbroken run done again: how far two identical runs drift apart on
    this device (GPU kernels that add with atomics need not give the same bits twice). The
    resumed run may differ from the unbroken one by ``atol`` or by four times that drift.
    """
    steps = [r.step for r in resumed.reports]
    loss_diff, weight_diff = differences(unbroken, resumed)
    floor_loss, floor_weight = differences(unbroken, repeat)
    report: dict[str, Any] = {
        "stopped_at": stop_at,
        "first_step_after_resume": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "max_loss_diff": loss_diff,
        "max_adapter_diff": weight_diff,
        "repeat_max_loss_diff": floor_loss,
        "repeat_max_adapter_diff": floor_weight,
        "adapter_max_abs": max(float(t.abs().max()) for t in unbroken.adapter.values()),
        "atol": atol,
    }
    report["ok"] = (
        steps == list(range(stop_at + 1, total + 1))
        and resumed.adapter.keys() == unbroken.adapter.keys()
        and loss_diff <= max(atol, 4 * floor_loss)
        and weight_diff <= max(atol, 4 * floor_weight)
    )
    return report


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": str(device),
        "bf16": training.uses_bf16(device),
        "weights_dtype": str(training.weights_dtype(device)).removeprefix("torch."),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            device_name=properties.name,
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    else:
        info["threads"] = torch.get_num_threads()
    return info


def bench(args: argparse.Namespace) -> dict[str, Any]:
    device = training.choose_device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    env = environment(device)
    say(f"environment: {json.dumps(env)}")
    spec = objectives.ObjectiveSpec.model_validate(samples.support_intent_spec())
    hyper = spec.training.model_copy(update={"epochs": args.epochs})
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-trainer-") as scratch:
        cache = pathlib.Path(scratch)
        started = time.perf_counter()
        models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=cache)
        say(f"built {models.TINY_LLAMA} in {time.perf_counter() - started:.1f}s")

        def fresh(dtype: torch.dtype | None = None) -> models.Loaded:
            return models.load(
                models.TINY_LLAMA,
                artifacts=None,
                cache_dir=cache,
                device=str(device),
                dtype=dtype or training.weights_dtype(device),
            )

        def wrapped(loaded: models.Loaded) -> peft.PeftModel:
            torch.manual_seed(0)
            return training.attach_lora(loaded.model, spec.lora)

        first = fresh()
        tokenizer, pad_id = first.tokenizer, int(first.tokenizer.pad_token_id)
        encoded = encoded_examples(tokenizer, spec, args.examples, hyper.max_seq_len)
        per_epoch = training.steps_per_epoch(len(encoded), hyper)
        total = per_epoch * hyper.epochs
        say(
            f"{len(encoded)} examples, {sum(len(e.input_ids) for e in encoded)} tokens per "
            f"epoch, {hyper.epochs} epochs of {per_epoch} steps, batch {hyper.batch_size}, "
            f"lora r={spec.lora.r} on {spec.lora.target_modules}"
        )

        def record(name: str, run: Run) -> None:
            runs[name] = run.summary()
            say(f"{name}: {json.dumps(runs[name])}")

        # Untimed, one epoch: CUDA context, cuBLAS handles, the allocator's first blocks,
        # kernels chosen for each batch shape.
        warm = hyper.model_copy(update={"epochs": 1})
        train_once(wrapped(first), encoded, hyper=warm, pad_id=pad_id, device=device)
        del first

        worker_model = wrapped(fresh())
        unbroken = train_once(worker_model, encoded, hyper=hyper, pad_id=pad_id, device=device)
        record("worker", unbroken)
        runs["worker"]["weights"] = placement(worker_model)
        del worker_model
        repeat = train_once(wrapped(fresh()), encoded, hyper=hyper, pad_id=pad_id, device=device)
        record("repeat", repeat)

        stop_at = total - per_epoch // 2
        interrupted = train_once(
            wrapped(fresh()), encoded, hyper=hyper, pad_id=pad_id, device=device, stop_at=stop_at
        )
        record("interrupted", interrupted)
        saved = training.Checkpoint.from_bytes(interrupted.checkpoints[-1])
        resumed_model = wrapped(fresh())
        resumed = train_once(
            resumed_model, encoded, hyper=hyper, pad_id=pad_id, device=device, resume=saved
        )
        record("resumed", resumed)
        resume = compare_resume(
            unbroken,
            repeat,
            resumed,
            stop_at=interrupted.interrupted_at or -1,
            total=total,
            atol=args.atol,
        )
        resume["checkpoint_step"] = saved.step
        resume["adapter_on"] = sorted(
            {str(p.device) for p in resumed_model.parameters() if p.requires_grad}
        )
        say(f"resume: {json.dumps(resume)}")

        fp32 = train_once(
            wrapped(fresh(torch.float32)),
            encoded,
            hyper=hyper,
            pad_id=pad_id,
            device=device,
            pass_device=False,
        )
        record("fp32_default_device", fp32)

        if args.big:
            try:
                runs["big"] = big_run(args, tokenizer, encoded, spec, hyper, device, pad_id)
            except Exception as exc:  # the figures above still come back
                runs["big"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            say(f"big: {json.dumps(runs['big'])}")

    checks = {
        "loss_down": all(
            r["loss_last"] < r["loss_first"]
            for name, r in runs.items()
            if name in ("worker", "fp32_default_device")
        ),
        "resume_ok": bool(resume["ok"]),
        "interrupted_at_stop": runs["interrupted"].get("interrupted_at") == stop_at,
    }
    return {
        "bench": "gpu_trainer",
        **env,
        "examples": len(encoded),
        "epochs": hyper.epochs,
        "batch_size": hyper.batch_size,
        "steps": total,
        "runs": runs,
        "resume": resume,
        "checks": checks,
        "ok": all(checks.values()),
    }


def placement(model: torch.nn.Module) -> dict[str, list[str]]:
    """Devices and dtypes of the frozen (base) and the trained (adapter) weights."""
    found: dict[str, set[str]] = {"base": set(), "adapter": set()}
    for parameter in model.parameters():
        kind = "adapter" if parameter.requires_grad else "base"
        found[kind].add(f"{parameter.device}/{str(parameter.dtype).removeprefix('torch.')}")
    return {kind: sorted(values) for kind, values in found.items()}


def big_run(
    args: argparse.Namespace,
    tokenizer: Any,
    encoded: list[data.Encoded],
    spec: objectives.ObjectiveSpec,
    hyper: objectives.Training,
    device: torch.device,
    pad_id: int,
) -> dict[str, Any]:
    """A bigger Llama-architecture model, made on the device at random, trained a while."""
    config = transformers.LlamaConfig(
        vocab_size=_round_up(len(tokenizer), 64),
        hidden_size=args.big_hidden,
        intermediate_size=args.big_intermediate,
        num_hidden_layers=args.big_layers,
        num_attention_heads=args.big_heads,
        num_key_value_heads=args.big_kv_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
        model.to(training.weights_dtype(device))  # type: ignore[arg-type]  # .to is typed oddly
    sync(device)
    made_s = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    big_hyper = hyper.model_copy(update={"epochs": args.big_epochs, "batch_size": args.big_batch})
    lora = training.attach_lora(model, spec.lora)
    run = train_once(lora, encoded, hyper=big_hyper, pad_id=pad_id, device=device)
    out = run.summary()
    tokens_per_s = out.get("tokens_per_s", 0.0)
    out.update(
        params=parameters,
        layers=args.big_layers,
        hidden=args.big_hidden,
        batch_size=args.big_batch,
        make_model_s=round(made_s, 2),
        approx_tflops=round(4 * parameters * tokens_per_s / 1e12, 1),
    )
    del lora, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def main(argv: Sequence[str] | None = None) -> int:
    global _quiet
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--examples", type=int, default=800, help="training examples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads on cpu")
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="resumed vs unbroken adapter, max abs diff"
    )
    parser.add_argument("--big", action="store_true", help="also train a ~1B-parameter model")
    parser.add_argument("--big-layers", type=int, default=22)
    parser.add_argument("--big-hidden", type=int, default=2048)
    parser.add_argument("--big-intermediate", type=int, default=5632)
    parser.add_argument("--big-heads", type=int, default=32)
    parser.add_argument("--big-kv-heads", type=int, default=4)
    parser.add_argument("--big-batch", type=int, default=32)
    parser.add_argument("--big-epochs", type=int, default=2)
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    _quiet = args.json_only
    # peft 0.21 probes a deprecated transformers 5 attribute on every wrap; not ours to fix.
    warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
    result = bench(args)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
