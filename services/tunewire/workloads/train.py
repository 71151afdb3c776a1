"""The trainer workload: ``python -m tunewire.workloads.train`` (also the Job's command).

One process trains one attempt of one run: it reads the objective version and the dataset
snapshot, loads the base model, trains a LoRA adapter (resuming from the run's last S3
checkpoint, if an earlier attempt left one), writes the adapter, ``metrics.json`` and
``card.md``, and only then claims the run's outcome and announces it on
``tunewire.training``. Every failure it can explain is announced the same way, with a
reason a person can act on. A SIGTERM (a pre-empted pod) checkpoints and exits 143 without
an outcome, so the next attempt resumes; so does S3 out of reach (after the client's own
retries), with exit status 75, which the train service retries.

Exit status: 0 when the run succeeded (now or in an earlier attempt), 1 when it failed,
2 for a wrong command line, 75 when S3 could not be reached, 143 when stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import pydantic
import torch

from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors, logs, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.launchers import launching
from tunewire.core.state import layout, objectives, outcomes
from tunewire.workloads import config, data, failures, models, training

log = logging.getLogger(__name__)

SOURCE = "tunewire/trainer"
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 143
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_OVERRIDABLE: dict[str, type[pydantic.BaseModel]] = {
    "lora": objectives.Lora,
    "training": objectives.Training,
}


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """What identifies the attempt, from the command line."""

    objective: str
    objective_version: int
    run_id: str
    dataset_id: str
    dataset_uri: str
    attempt: int
    overrides: dict[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a finished training produced, and what it was made from (for the model card)."""

    spec: objectives.ObjectiveSpec
    lora: objectives.Lora
    hyper: objectives.Training
    manifest: dict[str, Any]
    result: training.Result


def parser() -> argparse.ArgumentParser:
    """The command line of the trainer."""
    cli = argparse.ArgumentParser(
        prog="python -m tunewire.workloads.train",
        description=(
            "Train one attempt of a LoRA run and announce it on tunewire.training. S3, Kafka "
            "and trainer settings come from TUNEWIRE_* environment variables."
        ),
    )
    cli.add_argument("--objective", required=True, help="objective name (also the event key)")
    cli.add_argument(
        "--objective-version",
        type=int,
        required=True,
        help="version of the objective whose base_model, lora and training settings apply",
    )
    cli.add_argument(
        "--run-id",
        required=True,
        help="run id: names the adapter, checkpoint and run prefixes in S3",
    )
    cli.add_argument("--dataset-id", required=True, help="id of the dataset snapshot")
    cli.add_argument(
        "--dataset-uri",
        required=True,
        help="s3:// prefix of the snapshot (holding train.jsonl and manifest.json)",
    )
    cli.add_argument(
        "--attempt",
        type=int,
        default=1,
        help="attempt number, from 1; a later attempt resumes from the run's last checkpoint",
    )
    cli.add_argument(
        "--overrides",
        type=_overrides,
        default={},
        help='JSON object overriding objective settings, e.g. \'{"training": {"epochs": 1}}\'; '
        "keys: lora, training",
    )
    return cli


def _overrides(text: str) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise argparse.ArgumentTypeError('write an object of objects: {"lora": {...}}')
    unknown = sorted(set(document) - set(_OVERRIDABLE))
    if unknown:
        raise argparse.ArgumentTypeError(f"only lora and training can be overridden, not {unknown}")
    for group, values in document.items():
        try:
            _OVERRIDABLE[group].model_validate(values)
        except pydantic.ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{group}: {exc}") from None
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; returns the process exit status."""
    parsed = parser().parse_args(argv)
    args = RunArgs(
        objective=parsed.objective,
        objective_version=parsed.objective_version,
        run_id=parsed.run_id,
        dataset_id=parsed.dataset_id,
        dataset_uri=parsed.dataset_uri,
        attempt=parsed.attempt,
        overrides=parsed.overrides,
    )
    settings = config.TrainerSettings()
    logs.configure(settings.log_level)
    logging.captureWarnings(True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = producing.Producer(settings.kafka, client_id="tunewire-trainer")
    try:
        run = TrainerRun(
            args,
            settings=settings,
            artifacts=store.ArtifactStore(settings.s3),
            producer=producer,
            stop=stop,
        )
        return run.execute()
    except Exception:
        log.exception(
            "trainer stopped without announcing an outcome; the next attempt will",
            extra={"objective": args.objective, "run_id": args.run_id},
        )
        return EXIT_FAILED
    finally:
        producer.close()


class TrainerRun:
    """One attempt of one run, from its inputs to its announced outcome."""

    def __init__(
        self,
        args: RunArgs,
        *,
        settings: config.TrainerSettings,
        artifacts: store.ArtifactStore,
        producer: producing.Producer,
        stop: threading.Event,
    ) -> None:
        self.args = args
        self._settings = settings
        self._store = artifacts
        self._producer = producer
        self._stop = stop
        self._context = {"objective": args.objective, "run_id": args.run_id}
        self._checkpoints = layout.checkpoints(args.objective, args.run_id)
        self._adapter_prefix = layout.adapter(args.objective, args.run_id)

    def execute(self) -> int:
        """Train unless the run already ended, claim the outcome, announce it; exit status."""
        existing = outcomes.read(self._store, self.args.objective, self.args.run_id)
        if existing is not None:
            log.info(f"run already ended ({existing.kind}); not training", extra=self._context)
            return self._announce(existing)
        try:
            outcome = self._succeed(self._train())
        except training.Interrupted as exc:
            log.warning(str(exc), extra=self._context)
            return EXIT_INTERRUPTED
        except Exception as exc:
            reason, message = failures.classify(exc)
            if reason == training_pb2.FAILURE_REASON_STORAGE:
                log.exception(f"{message}; leaving the run to another attempt", extra=self._context)
                return launching.EXIT_STORAGE
            log.exception(f"training failed: {message}", extra=self._context)
            outcome = outcomes.Outcome(
                kind="failed", decided_by="trainer", reason=int(reason), message=message, at=_now()
            )
        try:
            held = outcomes.claim(self._store, self.args.objective, self.args.run_id, outcome)
        except errors.Unavailable as exc:
            log.error(
                f"cannot record the outcome ({exc.message}); leaving the run to another attempt",
                extra=self._context,
            )
            return launching.EXIT_STORAGE
        return self._announce(held)

    # -- the work -----------------------------------------------------------------------

    def _train(self) -> Trained:
        catalog = objectives.ObjectiveCatalog(self._store)
        spec = catalog.get(self.args.objective, self.args.objective_version).spec
        lora, hyper = self._hyperparameters(spec)
        manifest = data.read_manifest(self._store, self.args.dataset_uri)
        rows = data.read_split(self._store, self.args.dataset_uri, "train")
        device = self._device()
        loaded = models.load(
            spec.base_model,
            artifacts=self._store,
            cache_dir=pathlib.Path(self._settings.model_cache).expanduser(),
            device=str(device),
            dtype=training.weights_dtype(device),
        )
        torch.manual_seed(self._settings.trainer.seed)
        model = training.attach_lora(loaded.model, lora)
        encoded = [
            data.encode(loaded.tokenizer, row["messages"], max_seq_len=hyper.max_seq_len)
            for row in rows
        ]
        resume = self._latest_checkpoint()
        self._publish(
            training_pb2.TrainingEvent(
                started=training_pb2.TrainingEvent.Started(
                    worker=socket.gethostname(), resumed_from_step=resume.step if resume else 0
                )
            ),
            envelope.derived_id(self.args.run_id, "started", str(self.args.attempt)),
        )
        log.info(
            f"training {len(encoded)} examples on {device}"
            + (f", resuming from step {resume.step}" if resume else ""),
            extra=self._context,
        )
        result = training.train(
            model,
            encoded,
            training=hyper,
            pad_id=int(loaded.tokenizer.pad_token_id),
            seed=self._settings.trainer.seed,
            resume=resume,
            device=device,
            schedule=training.Schedule(
                on_progress=self._progress,
                on_checkpoint=self._checkpoint,
                progress_every_s=self._settings.trainer.progress_every_s,
                checkpoint_every_s=self._settings.trainer.checkpoint_every_s,
                stop=self._stop,
            ),
        )
        # The adapter records where its base model came from as the objective names it.
        model.peft_config["default"].base_model_name_or_path = spec.base_model
        with tempfile.TemporaryDirectory(prefix="adapter-") as scratch:
            model.save_pretrained(scratch)
            for name in ADAPTER_FILES:
                self._store.upload_file(
                    self._adapter_prefix + name,
                    pathlib.Path(scratch) / name,
                    content_type="application/octet-stream",
                )
        return Trained(spec=spec, lora=lora, hyper=hyper, manifest=manifest, result=result)

    def _succeed(self, trained: Trained) -> outcomes.Outcome:
        """Write metrics.json and card.md beside the adapter; the outcome that announces them."""
        self._store.put_json(self._adapter_prefix + "metrics.json", trained.result.document())
        card = model_card(self.args, trained)
        self._store.put_bytes(
            self._adapter_prefix + "card.md", card.encode(), content_type="text/markdown"
        )
        return outcomes.Outcome(
            kind="succeeded",
            decided_by="trainer",
            adapter_uri=self._store.uri(self._adapter_prefix),
            metrics=trained.result.metrics(),
            at=_now(),
        )

    def _hyperparameters(
        self, spec: objectives.ObjectiveSpec
    ) -> tuple[objectives.Lora, objectives.Training]:
        overrides = self.args.overrides
        lora = objectives.Lora.model_validate(
            {**spec.lora.model_dump(), **overrides.get("lora", {})}
        )
        hyper = objectives.Training.model_validate(
            {**spec.training.model_dump(), **overrides.get("training", {})}
        )
        return lora, hyper

    def _device(self) -> torch.device:
        device = training.choose_device(self._settings.trainer.device)
        if device.type == "cpu":
            threads = self._settings.trainer.threads or len(os.sched_getaffinity(0))
            torch.set_num_threads(threads)
        return device

    # -- progress and checkpoints -------------------------------------------------------

    def _progress(self, report: training.Report) -> None:
        self._publish(
            training_pb2.TrainingEvent(
                progress=training_pb2.TrainingEvent.Progress(
                    step=report.step,
                    total_steps=report.total_steps,
                    epoch=report.epoch,
                    loss=report.loss,
                    tokens_per_second=report.tokens_per_second,
                    eta_seconds=report.eta_seconds,
                )
            ),
            envelope.derived_id(self.args.run_id, "progress", str(report.step)),
        )
        document = {
            **dataclasses.asdict(report),
            "attempt": self.args.attempt,
            "updated_at": _now().isoformat(),
        }
        try:
            self._store.put_json(
                layout.run(self.args.objective, self.args.run_id) + "progress.json",
                document,
            )
        except errors.Unavailable as exc:
            log.warning("progress.json not written", extra={**self._context, "error": str(exc)})
        log.info(
            f"step {report.step}/{report.total_steps} epoch {report.epoch:.2f} "
            f"loss {report.loss:.4f} {report.tokens_per_second:.0f} tokens/s "
            f"eta {report.eta_seconds:.0f}s",
            extra=self._context,
        )

    def _checkpoint(self, checkpoint: training.Checkpoint) -> None:
        """Upload the state, then point ``latest.json`` at it, then drop older states.

        A failed upload is logged, not fatal: training goes on and the next checkpoint
        tries again (a pre-emption meanwhile resumes from the previous one).
        """
        key = f"{self._checkpoints}step-{checkpoint.step:08d}.pt"
        try:
            self._store.put_bytes(key, checkpoint.to_bytes())
            self._store.put_json(
                self._checkpoints + "latest.json",
                {"step": checkpoint.step, "key": key, "attempt": self.args.attempt},
            )
            for old in self._store.list_keys(self._checkpoints + "step-"):
                if old != key:
                    self._store.delete(old)
        except errors.Unavailable as exc:
            log.warning("checkpoint not written", extra={**self._context, "error": str(exc)})
            return
        log.info(f"checkpoint at step {checkpoint.step}", extra=self._context)

    def _latest_checkpoint(self) -> training.Checkpoint | None:
        try:
            pointer = self._store.get_json(self._checkpoints + "latest.json")
            return training.Checkpoint.from_bytes(self._store.get_bytes(pointer["key"]))
        except errors.NotFound:
            return None

    # -- events ---------------------------------------------------------------------------

    def _announce(self, outcome: outcomes.Outcome) -> int:
        """Publish the terminal event of an outcome the trainer decided; the exit status."""
        if outcome.decided_by != "trainer":
            log.info(
                f"run was ended by {outcome.decided_by} ({outcome.kind}); it announces it",
                extra=self._context,
            )
        elif outcome.kind == "succeeded":
            self._publish(
                training_pb2.TrainingEvent(
                    succeeded=training_pb2.TrainingEvent.Succeeded(
                        adapter_uri=outcome.adapter_uri, metrics=outcome.metrics
                    )
                ),
                envelope.derived_id(self.args.run_id, "succeeded"),
                at=outcome.at,
            )
        else:
            self._publish(
                training_pb2.TrainingEvent(
                    failed=training_pb2.TrainingEvent.Failed(
                        reason=training_pb2.FailureReason.Name(outcome.reason),
                        message=outcome.message,
                    )
                ),
                envelope.derived_id(self.args.run_id, "failed"),
                at=outcome.at,
            )
        self._producer.flush()
        return EXIT_SUCCEEDED if outcome.kind == "succeeded" else EXIT_FAILED

    def _publish(
        self,
        event: training_pb2.TrainingEvent,
        event_id: str,
        *,
        at: datetime.datetime | None = None,
    ) -> None:
        moment = at or _now()
        event.run_id = self.args.run_id
        event.objective = self.args.objective
        event.dataset_id = self.args.dataset_id
        event.objective_version = self.args.objective_version
        event.attempt = self.args.attempt
        event.occurred_at.CopyFrom(envelope.timestamp(moment))
        self._producer.publish(
            topics.TRAINING,
            event,
            key=self.args.objective,
            event=envelope.for_payload(
                event, id=event_id, source=SOURCE, subject=self.args.run_id, time=moment
            ),
        )


def model_card(args: RunArgs, trained: Trained) -> str:
    """The adapter's ``card.md``: what it was trained on, how, and where that came from."""
    spec, manifest = trained.spec, trained.manifest
    hyperparameters = {"lora": trained.lora.model_dump(), "training": trained.hyper.model_dump()}
    rows = [
        ("objective", f"{args.objective} (version {args.objective_version})"),
        ("task", spec.task),
        ("base model", spec.base_model),
        ("dataset", f"{args.dataset_id} ({args.dataset_uri})"),
        ("parent dataset", str(manifest.get("parent") or "none")),
        ("dataset built from objective version", str(manifest.get("objective_version", "?"))),
        ("run", f"{args.run_id} (attempt {args.attempt})"),
        ("trained at", _now().isoformat()),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"# {args.objective} adapter {args.run_id}\n\n"
        f"A LoRA adapter for {spec.base_model}, trained by tunewire.\n\n"
        f"| | |\n|---|---|\n{table}\n\n"
        "## Hyperparameters\n\n"
        f"```json\n{json.dumps(hyperparameters, indent=2, sort_keys=True)}\n```\n\n"
        "## Training metrics\n\n"
        f"```json\n{json.dumps(trained.result.document(), indent=2, sort_keys=True)}\n```\n\n"
        "## Prompt\n\nEvery example's system turn:\n\n"
        f"```\n{manifest.get('instruction', '')}\n```\n"
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


if __name__ == "__main__":
    sys.exit(main())
