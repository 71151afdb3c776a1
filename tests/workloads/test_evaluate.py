"""The evaluator workload as the evaluate service runs it: a process against real S3."""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import peft
import pytest

from tests.workloads import evaluate_support
from tunewire import samples
from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors, store
from tunewire.core.state import objectives
from tunewire.evaluate import reports
from tunewire.stack import embedded
from tunewire.workloads import evaluate, failures, models, scoring

LABELS = evaluate_support.LABELS
EVAL_EXAMPLES = 12
MAX_SEQ_LEN = 128  # the sample objective's training.max_seq_len


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, model_cache: pathlib.Path) -> pathlib.Path:
    """Two different LoRA adapters of the built-in model, and one that changes nothing
    (``identity``), saved once on local disk."""
    folder = tmp_path_factory.mktemp("adapters")
    for seed, name in ((1, "candidate"), (2, "champion")):
        evaluate_support.random_adapter(model_cache, folder / name, seed=seed)
    evaluate_support.random_adapter(model_cache, folder / "identity", seed=3, identity=True)
    return folder


@pytest.fixture
def workload_env(stack: embedded.EmbeddedStack, model_cache: pathlib.Path) -> dict[str, str]:
    """What an evaluator Job gets: the stack's S3 and the shared model cache."""
    return {
        **os.environ,
        **stack.service_env(0),
        "TUNEWIRE_MODEL_CACHE": str(model_cache),
        "TUNEWIRE_LOG_LEVEL": "INFO",
    }


def _objective(artifacts: store.ArtifactStore, *, task: str) -> objectives.ObjectiveVersion:
    """A fresh objective of ``task``: the ticket sample (its rules only for classification),
    or a small maintenance extraction."""
    if task == "extraction":
        document = evaluate_support.extraction_spec("eval")
    else:
        document = samples.support_intent_spec()
        document.update(task=task)
        if task != "classification":
            del document["labelling"]["rules"]
    document.update(name=f"eval-{uuid.uuid4().hex[:8]}")
    return objectives.ObjectiveCatalog(artifacts).register(
        objectives.parse_spec(document), actor="test"
    )


def _snapshot(
    artifacts: store.ArtifactStore, objective: objectives.ObjectiveVersion, eval_lines: list[Any]
) -> str:
    """A dataset snapshot laid out as the label service writes it; returns its URI."""
    prefix = f"datasets/{objective.name}/ds-test"
    parts = {
        "train.jsonl": _jsonl(evaluate_support.chat_examples(8, seed=5)),
        "eval.jsonl": _jsonl(eval_lines),
    }
    manifest = {
        "dataset_id": "ds-test",
        "objective": objective.name,
        "objective_version": objective.version,
        "task": objective.spec.task,
        "instruction": evaluate_support.INSTRUCTION,
        "counts": {"train": 8, "eval": len(eval_lines)},
    }
    for name, data in parts.items():
        artifacts.put_bytes(f"{prefix}/{name}", data)
    artifacts.put_json(f"{prefix}/manifest.json", manifest)
    return artifacts.uri(prefix + "/")


def _upload(artifacts: store.ArtifactStore, folder: pathlib.Path, prefix: str) -> str:
    for path in sorted(folder.iterdir()):
        artifacts.put_bytes(f"{prefix}/{path.name}", path.read_bytes())
    return artifacts.uri(prefix + "/")


def _jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewire.workloads.evaluate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _log_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line the workload wrote to stderr; each must be a JSON object."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def _args(
    objective: objectives.ObjectiveVersion, *, run_id: str, dataset_uri: str, candidate_uri: str
) -> list[str]:
    return [
        "--objective",
        objective.name,
        "--objective-version",
        str(objective.version),
        "--run-id",
        run_id,
        "--dataset-id",
        "ds-test",
        "--dataset-uri",
        dataset_uri,
        "--candidate-uri",
        candidate_uri,
        "--output-key",
        f"evaluations/{objective.name}/{run_id}/metrics.json",
    ]


def test_classification_scores_base_champion_and_candidate_on_the_same_examples(
    artifacts: store.ArtifactStore,
    workload_env: dict[str, str],
    adapters: pathlib.Path,
    model_cache: pathlib.Path,
) -> None:
    objective = _objective(artifacts, task="classification")
    examples = evaluate_support.chat_examples(EVAL_EXAMPLES, seed=9)
    dataset_uri = _snapshot(artifacts, objective, examples)
    candidate_uri = _upload(artifacts, adapters / "candidate", f"adapters/{objective.name}/r-new")
    champion_uri = _upload(artifacts, adapters / "champion", f"adapters/{objective.name}/r-old")
    args = _args(objective, run_id="r-new", dataset_uri=dataset_uri, candidate_uri=candidate_uri)

    done = _run(
        workload_env,
        *args,
        "--champion-run-id",
        "r-old",
        "--champion-uri",
        champion_uri,
        "--max-examples",
        "10",
    )

    assert done.returncode == 0, done.stderr[-3000:]
    key = f"evaluations/{objective.name}/r-new/metrics.json"
    metrics = artifacts.get_json(key)
    # The evaluate service, which gates on this file, reads it as a report of this run.
    reports.read(artifacts, key, objective=objective.name, run_id="r-new")
    assert set(metrics) == {
        "objective",
        "objective_version",
        "run_id",
        "dataset_id",
        "task",
        "examples",
        "base",
        "champion",
        "candidate",
        "disagreements",
        "warnings",
        "seconds",
    }
    assert (metrics["objective"], metrics["objective_version"]) == (objective.name, 1)
    assert (metrics["run_id"], metrics["dataset_id"], metrics["task"]) == (
        "r-new",
        "ds-test",
        "classification",
    )
    assert metrics["examples"] == 10
    refs = {who: metrics[who]["model_ref"] for who in ("base", "champion", "candidate")}
    assert refs == {"base": models.TINY_LLAMA, "champion": "r-old", "candidate": "r-new"}
    lifted = {"accuracy", "macro_f1", "lift.accuracy", "lift.macro_f1"}
    for who in ("base", "champion", "candidate"):
        assert metrics[who]["examples"] == 10
        assert set(metrics[who]["values"]) == (
            lifted if who != "base" else {"accuracy", "macro_f1"}
        )
        assert all(-1.0 <= v <= 1.0 for v in metrics[who]["values"].values())
    assert metrics["seconds"] > 0

    # The same adapters scored here, in this process, give the same numbers and answers.
    scored = {}
    shown = examples[:10]
    base = evaluate_support.load_base(model_cache)
    model = peft.PeftModel.from_pretrained(
        base.model, str(adapters / "candidate"), adapter_name="candidate"
    )
    model.load_adapter(str(adapters / "champion"), adapter_name="champion")
    model.eval()
    for name in ("champion", "candidate"):
        model.set_adapter(name)
        scored[name] = scoring.score_classification(
            model, base.tokenizer, shown, labels=LABELS, max_seq_len=MAX_SEQ_LEN
        )
    with model.disable_adapter():
        scored["base"] = scoring.score_classification(
            model, base.tokenizer, shown, labels=LABELS, max_seq_len=MAX_SEQ_LEN
        )
    for who, result in scored.items():
        values = metrics[who]["values"]
        assert {k: v for k, v in values.items() if k in result.values} == pytest.approx(
            result.values
        ), who
        if who != "base":
            assert values["lift.accuracy"] == pytest.approx(
                result.values["accuracy"] - scored["base"].values["accuracy"]
            )
    assert metrics["warnings"] == evaluate.same_as_base(scored)
    assert scored["candidate"].answers != scored["champion"].answers, "adapters must differ"
    differing = [
        {
            "id": e["id"],
            "text": e["messages"][1]["content"],
            "expected": e["messages"][2]["content"],
            "candidate": ours,
            "champion_or_base": theirs,
        }
        for e, ours, theirs in zip(
            shown, scored["candidate"].answers, scored["champion"].answers, strict=True
        )
        if ours != theirs
    ]
    assert metrics["disagreements"] == differing[:10]

    lines = _log_lines(done.stderr)
    progress = [line["message"] for line in lines if "examples scored" in line["message"]]
    assert progress[-1] == "candidate: 10/10 examples scored"
    assert {line.get("run_id") for line in lines if "examples scored" in line["message"]} == {
        "r-new"
    }


def test_generation_without_champion_compares_the_candidate_with_the_base(
    artifacts: store.ArtifactStore, workload_env: dict[str, str], adapters: pathlib.Path
) -> None:
    objective = _objective(artifacts, task="generation")
    dataset_uri = _snapshot(artifacts, objective, evaluate_support.chat_examples(6, seed=4))
    candidate_uri = _upload(artifacts, adapters / "candidate", f"adapters/{objective.name}/r-gen")

    done = _run(
        workload_env,
        *_args(objective, run_id="r-gen", dataset_uri=dataset_uri, candidate_uri=candidate_uri),
        "--max-new-tokens",
        "4",
    )

    assert done.returncode == 0, done.stderr[-3000:]
    metrics = artifacts.get_json(f"evaluations/{objective.name}/r-gen/metrics.json")
    assert metrics["task"] == "generation"
    assert metrics["champion"] is None
    assert metrics["examples"] == metrics["base"]["examples"] == 6
    assert metrics["candidate"]["examples"] == 6
    names = {"exact_match", "rouge_l", "token_f1", "length_ratio", "eval_loss", "perplexity"}
    base, candidate = metrics["base"]["values"], metrics["candidate"]["values"]
    assert set(base) == names
    assert set(candidate) == names | {f"lift.{name}" for name in names}
    for values in (base, candidate):
        assert values["perplexity"] == pytest.approx(math.exp(values["eval_loss"]))
    assert candidate["lift.rouge_l"] == pytest.approx(candidate["rouge_l"] - base["rouge_l"])
    assert candidate["eval_loss"] != base["eval_loss"]
    for item in metrics["disagreements"]:
        assert scoring.normalise(item["candidate"]) != scoring.normalise(item["champion_or_base"])


def test_extraction_holds_answers_to_the_schema_and_warns_of_an_adapter_that_changes_nothing(
    artifacts: store.ArtifactStore,
    model_cache: pathlib.Path,
    adapters: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    objective = _objective(artifacts, task="extraction")
    examples = evaluate_support.extraction_examples(objective.spec, 4, seed=2)
    key = f"evaluations/{objective.name}/r-ex/metrics.json"
    request = evaluate.Request(
        objective=objective.name,
        objective_version=objective.version,
        run_id="r-ex",
        dataset_id="ds-test",
        dataset_uri=_snapshot(artifacts, objective, examples),
        candidate_uri=_upload(artifacts, adapters / "identity", f"adapters/{objective.name}/r-ex"),
        output_key=key,
        max_new_tokens=48,
    )

    with caplog.at_level(logging.WARNING, logger=evaluate.log.name):
        written = evaluate.evaluate(request, artifacts=artifacts, cache_dir=model_cache)

    metrics = artifacts.get_json(key)
    assert metrics == written
    assert metrics["task"] == "extraction"
    assert objective.spec.output is not None
    fields = list(objective.spec.output.fields)
    names = {
        "json_valid_rate",
        "schema_valid_rate",
        "field_accuracy",
        *(f"field_accuracy.{name}" for name in fields),
        "field_f1",
        "field_f1_micro",
        "field_f1_macro",
        "exact_record_match",
        "eval_loss",
        "perplexity",
    }
    base, candidate = metrics["base"]["values"], metrics["candidate"]["values"]
    assert set(base) == names
    assert set(candidate) == names | {f"lift.{name}" for name in names}
    # Held to the schema, every answer of the base model is a valid report.
    assert base["json_valid_rate"] == base["schema_valid_rate"] == 1.0
    assert base["field_f1"] == base["field_f1_micro"]
    # The adapter changes nothing: no lift, no disagreement, and a warning that says so.
    assert {k: v for k, v in candidate.items() if not k.startswith("lift.")} == base
    assert all(candidate[f"lift.{name}"] == 0.0 for name in names)
    assert metrics["disagreements"] == []
    warning = (
        "the candidate's answers equal the base model's on all 4 eval examples: "
        "its adapter may not be applied, or may have learnt nothing"
    )
    assert metrics["warnings"] == [warning]
    assert [r.getMessage() for r in caplog.records if r.name == evaluate.log.name] == [warning]
    # The service reads the warning with the rest.
    assert reports.read(artifacts, key, objective=objective.name, run_id="r-ex").warnings == [
        warning
    ]


def test_a_corrupt_adapter_fails_the_run_with_its_address(
    artifacts: store.ArtifactStore,
    workload_env: dict[str, str],
    adapters: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    objective = _objective(artifacts, task="classification")
    dataset_uri = _snapshot(artifacts, objective, evaluate_support.chat_examples(4, seed=8))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes(
        (adapters / "candidate" / "adapter_config.json").read_bytes()
    )
    (broken / "adapter_model.safetensors").write_bytes(b"\x00not a safetensors file")
    candidate_uri = _upload(artifacts, broken, f"adapters/{objective.name}/r-bad")

    done = _run(
        workload_env,
        *_args(objective, run_id="r-bad", dataset_uri=dataset_uri, candidate_uri=candidate_uri),
    )

    assert done.returncode == 1
    failure = _log_lines(done.stderr)[-1]
    assert failure["level"] == "error"
    assert "FAILURE_REASON_STORAGE" in failure["message"]
    assert f"adapter at {candidate_uri} is unreadable" in failure["error"]
    with pytest.raises(errors.NotFound):
        artifacts.get_bytes(f"evaluations/{objective.name}/r-bad/metrics.json")


def test_a_missing_adapter_is_a_storage_failure_naming_where_it_looked(
    artifacts: store.ArtifactStore, model_cache: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    objective = _objective(artifacts, task="classification")
    dataset_uri = _snapshot(artifacts, objective, evaluate_support.chat_examples(4, seed=8))
    missing = artifacts.uri(f"adapters/{objective.name}/r-none/")
    request = evaluate.Request(
        objective=objective.name,
        objective_version=objective.version,
        run_id="r-none",
        dataset_id="ds-test",
        dataset_uri=dataset_uri,
        candidate_uri=missing,
        output_key=f"evaluations/{objective.name}/r-none/metrics.json",
    )

    with pytest.raises(failures.StorageFailure) as raised:
        evaluate.evaluate(request, artifacts=artifacts, cache_dir=model_cache)

    assert f"adapter at {missing} is unreadable" in raised.value.message
    reason, _ = failures.classify(raised.value)
    assert reason == training_pb2.FAILURE_REASON_STORAGE


def test_a_dataset_uri_of_another_snapshot_is_refused(
    artifacts: store.ArtifactStore, model_cache: pathlib.Path
) -> None:
    objective = _objective(artifacts, task="classification")
    dataset_uri = _snapshot(artifacts, objective, evaluate_support.chat_examples(4, seed=8))
    request = evaluate.Request(
        objective=objective.name,
        objective_version=objective.version,
        run_id="r-other",
        dataset_id="ds-other",
        dataset_uri=dataset_uri,
        candidate_uri=artifacts.uri(f"adapters/{objective.name}/r-other/"),
        output_key=f"evaluations/{objective.name}/r-other/metrics.json",
    )

    with pytest.raises(failures.BadDataset, match=r"is dataset 'ds-test'.*not 'ds-other'"):
        evaluate.evaluate(request, artifacts=artifacts, cache_dir=model_cache)


def test_disagreements_keep_the_first_ten_real_differences() -> None:
    examples = evaluate_support.chat_examples(13, seed=6)
    ours = ["refund"] * 13
    theirs = ["Refund "] + ["shipping"] * 12  # the first differs only in case and spacing

    found = evaluate.disagreements(examples, ours, theirs, limit=10)

    assert [item["id"] for item in found] == [e["id"] for e in examples[1:11]]
    assert found[0] == {
        "id": examples[1]["id"],
        "text": examples[1]["messages"][1]["content"],
        "expected": examples[1]["messages"][2]["content"],
        "candidate": "refund",
        "champion_or_base": "shipping",
    }


def test_the_command_line_explains_itself_and_refuses_half_a_champion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as shown:
        evaluate.parse(["--help"])
    assert shown.value.code == 0
    assert "--candidate-uri" in capsys.readouterr().out

    with pytest.raises(SystemExit) as refused:
        evaluate.parse(
            [
                *("--objective", "o", "--objective-version", "1", "--run-id", "r"),
                *(
                    "--dataset-id",
                    "d",
                    "--dataset-uri",
                    "s3://b/d/",
                    "--candidate-uri",
                    "s3://b/a/",
                ),
                *("--output-key", "k", "--champion-run-id", "c"),
            ]
        )
    assert refused.value.code == 2
    assert "--champion-uri" in capsys.readouterr().err
