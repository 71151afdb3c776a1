"""The evaluator workload: score a candidate adapter, the champion and the base model.

``python -m tunewire.workloads.evaluate`` runs inside a Job that the evaluate service
launches. It loads the objective's base model once, puts the candidate (and the current
champion) on it as named LoRA adapters, and scores the base model (adapters off), the
champion and the candidate on the same held-out examples with the metrics of the
objective's task (:mod:`tunewire.workloads.scoring`); each adapter's metrics carry its lift
over the base model. It writes ``metrics.json`` to S3 and exits 0, with a warning there (and
in the log) when an adapter answered exactly as the base model did. The service reads that
file, applies the gates and announces the decision, so this workload neither decides nor
publishes. On failure it logs the classified reason and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import peft
import torch

from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors, logs, settings, store
from tunewire.core.state import objectives
from tunewire.workloads import data, failures, models, scoring

log = logging.getLogger("tunewire.workloads.evaluate")

MAX_DISAGREEMENTS = 10
BASE = "base"
CANDIDATE = "candidate"
CHAMPION = "champion"
ADAPTER_CONFIG = "adapter_config.json"


@dataclasses.dataclass(frozen=True)
class Request:
    """What to evaluate, as given on the command line."""

    objective: str
    objective_version: int
    run_id: str
    dataset_id: str
    dataset_uri: str
    candidate_uri: str
    output_key: str
    champion_run_id: str | None = None
    champion_uri: str | None = None
    max_examples: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 64


def parser() -> argparse.ArgumentParser:
    """The command line, with ``--help`` saying what each argument is for."""
    cli = argparse.ArgumentParser(
        prog="python -m tunewire.workloads.evaluate",
        description=(
            "Score a candidate LoRA adapter, the current champion and the base model on the "
            "same held-out examples of a dataset snapshot, with the objective's metrics "
            "(classification: accuracy, macro_f1; generation: exact_match, rouge_l, "
            "token_f1, length_ratio, eval_loss, perplexity; extraction, with answers held to "
            "the output's JSON schema: json_valid_rate, schema_valid_rate, field_accuracy, "
            "field_accuracy.<field>, field_f1 (= field_f1_micro), field_f1_macro, "
            "exact_record_match, eval_loss, perplexity; each adapter also lift.<metric> over "
            "the base model), and write metrics.json to S3. S3 is configured by "
            "TUNEWIRE_S3__* variables; base models are cached in TUNEWIRE_MODEL_CACHE. "
            "Exits 0 once metrics.json is written, 1 on failure (the reason is logged)."
        ),
    )
    cli.add_argument("--objective", required=True, help="objective name")
    cli.add_argument(
        "--objective-version",
        required=True,
        type=int,
        help="objective version whose base model, labels and max_seq_len apply",
    )
    cli.add_argument("--run-id", required=True, help="run id of the candidate adapter")
    cli.add_argument("--dataset-id", required=True, help="id of the dataset snapshot")
    cli.add_argument(
        "--dataset-uri",
        required=True,
        help="s3:// prefix of the snapshot; its eval.jsonl is the held-out split",
    )
    cli.add_argument(
        "--candidate-uri", required=True, help="s3:// prefix holding the candidate adapter"
    )
    cli.add_argument("--champion-run-id", help="run id of the current champion, if any")
    cli.add_argument("--champion-uri", help="s3:// prefix holding the champion's adapter")
    cli.add_argument(
        "--output-key",
        required=True,
        help="key of metrics.json in the configured bucket, e.g. evaluations/O/R/metrics.json",
    )
    cli.add_argument(
        "--max-examples",
        type=_positive,
        help="score only the first N eval examples (default: all of them)",
    )
    cli.add_argument(
        "--batch-size",
        type=_positive,
        default=8,
        help=(
            "examples per forward pass (default 8); classification scores every label of "
            "each, so a pass holds batch-size x labels sequences: lower it on out-of-memory"
        ),
    )
    cli.add_argument(
        "--max-new-tokens",
        type=_positive,
        default=64,
        help=(
            "generation and extraction objectives: longest answer generated per example "
            "(default 64); an extraction answer cut short is not valid JSON"
        ),
    )
    return cli


def parse(argv: Sequence[str] | None = None) -> Request:
    """The :class:`Request` of a command line; exits 2 with usage on a bad one."""
    cli = parser()
    args = cli.parse_args(argv)
    if (args.champion_run_id is None) != (args.champion_uri is None):
        cli.error("--champion-run-id and --champion-uri go together")
    return Request(
        objective=args.objective,
        objective_version=args.objective_version,
        run_id=args.run_id,
        dataset_id=args.dataset_id,
        dataset_uri=args.dataset_uri,
        candidate_uri=args.candidate_uri,
        output_key=args.output_key,
        champion_run_id=args.champion_run_id,
        champion_uri=args.champion_uri,
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )


def evaluate(
    request: Request, *, artifacts: store.ArtifactStore, cache_dir: pathlib.Path
) -> dict[str, Any]:
    """Score base, champion and candidate, write ``metrics.json``; return its content.

    The adapters are fetched before the base model is loaded, so a missing one fails the
    run in seconds rather than after a large model has been read.
    """
    started = time.monotonic()
    context = {"objective": request.objective, "run_id": request.run_id}
    catalog = objectives.ObjectiveCatalog(artifacts)
    spec = catalog.get(request.objective, request.objective_version).spec
    _check_snapshot(data.read_manifest(artifacts, request.dataset_uri), request)
    examples = data.read_split(artifacts, request.dataset_uri, "eval")
    if request.max_examples is not None:
        examples = examples[: request.max_examples]
    adapters = {CANDIDATE: request.candidate_uri}
    if request.champion_uri is not None:
        adapters[CHAMPION] = request.champion_uri
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="adapters-") as scratch:
        fetched = {
            name: download_adapter(uri, artifacts=artifacts, directory=pathlib.Path(scratch) / name)
            for name, uri in adapters.items()
        }
        loaded = models.load(
            spec.base_model,
            artifacts=artifacts,
            cache_dir=cache_dir,
            device=device,
            dtype=torch.bfloat16 if device == "cuda" else None,
        )
        where = next(loaded.model.parameters()).device
        log.info("base model %s loaded on %s", spec.base_model, where, extra=context)
        model = attach_adapters(loaded.model, fetched, uris=adapters)
    model.eval()
    scored = score_models(
        model, loaded.tokenizer, examples, spec=spec, request=request, context=context
    )
    warnings = same_as_base(scored)
    for warning in warnings:
        log.warning(warning, extra=context)
    base = scored[BASE].values
    champion = scored.get(CHAMPION)
    document: dict[str, Any] = {
        "objective": request.objective,
        "objective_version": request.objective_version,
        "run_id": request.run_id,
        "dataset_id": request.dataset_id,
        "task": spec.task,
        "examples": len(examples),
        "base": _model_metrics(spec.base_model, scored[BASE]),
        "champion": (
            _model_metrics(str(request.champion_run_id), champion, base=base) if champion else None
        ),
        "candidate": _model_metrics(request.run_id, scored[CANDIDATE], base=base),
        "disagreements": disagreements(
            examples,
            scored[CANDIDATE].answers,
            (champion or scored[BASE]).answers,
            limit=MAX_DISAGREEMENTS,
        ),
        "warnings": warnings,
        "seconds": round(time.monotonic() - started, 3),
    }
    artifacts.put_json(request.output_key, document)
    log.info("metrics written to %s", artifacts.uri(request.output_key), extra=context)
    return document


def score_models(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    spec: objectives.ObjectiveSpec,
    request: Request,
    context: Mapping[str, str],
) -> dict[str, scoring.Scored]:
    """Base (adapters off), champion (when loaded) and candidate, on the same examples."""

    def score(name: str) -> scoring.Scored:
        def progress(done: int) -> None:
            message = "%s: %d/%d examples scored"
            log.info(message, name, done, len(examples), extra={**context, "count": done})

        if spec.task == "classification":
            return scoring.score_classification(
                model,
                tokenizer,
                examples,
                labels=spec.labels,
                max_seq_len=spec.training.max_seq_len,
                batch_size=request.batch_size,
                on_progress=progress,
            )
        if spec.output is not None:  # extraction
            return scoring.score_extraction(
                model,
                tokenizer,
                examples,
                output=spec.output,
                max_seq_len=spec.training.max_seq_len,
                max_new_tokens=request.max_new_tokens,
                batch_size=request.batch_size,
                on_progress=progress,
            )
        return scoring.score_generation(
            model,
            tokenizer,
            examples,
            max_seq_len=spec.training.max_seq_len,
            max_new_tokens=request.max_new_tokens,
            batch_size=request.batch_size,
            on_progress=progress,
        )

    scored: dict[str, scoring.Scored] = {}
    with model.disable_adapter():
        scored[BASE] = score(BASE)
    for name in (CHAMPION, CANDIDATE):
        if name in model.peft_config:
            model.set_adapter(name)
            scored[name] = score(name)
    return scored


def same_as_base(scored: Mapping[str, scoring.Scored]) -> list[str]:
    """A warning for each adapter that answered every example exactly as the base model did:
    it most likely never took effect (mis-routed, or trained to nothing), which metrics that
    merely look poor would not say."""
    base = scored[BASE].answers
    return [
        f"the {name}'s answers equal the base model's on all {len(base)} eval examples: "
        "its adapter may not be applied, or may have learnt nothing"
        for name in (CHAMPION, CANDIDATE)
        if name in scored and scored[name].answers == base
    ]


def download_adapter(
    uri: str, *, artifacts: store.ArtifactStore, directory: pathlib.Path
) -> pathlib.Path:
    """Every object under the adapter's ``s3://`` prefix, copied into ``directory``.

    :class:`failures.StorageFailure` when the address is not an S3 prefix holding an
    ``adapter_config.json``.
    """
    try:
        bucket, prefix = store.split_uri(uri)
    except errors.InvalidRequest as exc:
        raise failures.StorageFailure(f"adapter at {uri} is unreadable: {exc.message}") from None
    prefix = prefix.rstrip("/") + "/"
    source = artifacts.for_bucket(bucket)
    keys = source.files_under(prefix)
    if prefix + ADAPTER_CONFIG not in keys:
        raise failures.StorageFailure(
            f"adapter at {uri} is unreadable: there is no {ADAPTER_CONFIG} under it; "
            "check the run id, or retrain the run"
        )
    try:
        source.download_tree(prefix, keys, directory)
    except errors.InvalidRequest as exc:
        raise failures.StorageFailure(f"adapter at {uri} is unreadable: {exc.message}") from None
    return directory


def attach_adapters(
    base: Any, directories: Mapping[str, pathlib.Path], *, uris: Mapping[str, str]
) -> Any:
    """The base model with each downloaded adapter loaded under its name.

    The first adapter wraps the base in a ``PeftModel``; the others are loaded beside it, so
    every model shares the same base weights in memory. An adapter peft cannot read is a
    :class:`failures.StorageFailure` naming its address (``uris``).
    """
    model: Any = None
    for name, directory in directories.items():
        try:
            if model is None:
                model = peft.PeftModel.from_pretrained(base, str(directory), adapter_name=name)
            else:
                model.load_adapter(str(directory), adapter_name=name)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            raise failures.StorageFailure(
                f"adapter at {uris[name]} is unreadable: {type(exc).__name__}: {exc}; "
                "retrain the run or restore its files"
            ) from exc
    return model


def disagreements(
    examples: Sequence[dict[str, Any]],
    candidate: Sequence[str],
    reference: Sequence[str],
    *,
    limit: int,
) -> list[dict[str, str]]:
    """Up to ``limit`` examples where the candidate answered differently, for reviewers.

    ``reference`` holds the champion's answers, or the base model's without a champion.
    Answers that differ only in case or spacing are not counted as different.
    """
    found: list[dict[str, str]] = []
    for example, ours, theirs in zip(examples, candidate, reference, strict=True):
        if scoring.normalise(ours) == scoring.normalise(theirs):
            continue
        found.append(
            {
                "id": str(example["id"]),
                "text": scoring.question(example),
                "expected": scoring.answer(example),
                "candidate": ours,
                "champion_or_base": theirs,
            }
        )
        if len(found) == limit:
            break
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run one evaluation; 0 once metrics.json is written, 1 on any failure."""
    request = parse(argv)
    config = settings.WorkloadSettings()
    logs.configure(config.log_level)
    logging.captureWarnings(True)  # library warnings become JSON lines like the rest
    context = {"objective": request.objective, "run_id": request.run_id}
    try:
        evaluate(
            request,
            artifacts=store.ArtifactStore(config.s3),
            cache_dir=pathlib.Path(config.model_cache).expanduser(),
        )
    except Exception as exc:
        reason, message = failures.classify(exc)
        log.error(
            "evaluation failed (%s): %s",
            training_pb2.FailureReason.Name(reason),
            message,
            exc_info=exc,
            extra={**context, "error": message},
        )
        return 1
    return 0


def _check_snapshot(manifest: dict[str, Any], request: Request) -> None:
    """Refuse a dataset URI that points at another snapshot than the one named."""
    found = (manifest.get("objective"), manifest.get("dataset_id"))
    if found != (request.objective, request.dataset_id):
        raise failures.BadDataset(
            f"the snapshot at {request.dataset_uri} is dataset {found[1]!r} of objective "
            f"{found[0]!r}, not {request.dataset_id!r} of {request.objective!r}; "
            "check --dataset-uri and --dataset-id"
        )


def _model_metrics(
    model_ref: str, scored: scoring.Scored, *, base: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """One model's entry in metrics.json; an adapter's values carry its lift over ``base``."""
    values = (
        scored.values if base is None else {**scored.values, **scoring.lift(scored.values, base)}
    )
    return {"model_ref": model_ref, "values": values, "examples": len(scored.answers)}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
