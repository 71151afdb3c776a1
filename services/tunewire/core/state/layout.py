"""Where everything lives in the bucket: the one place that builds S3 keys.

Services agree on artifacts through S3 (ingest's archive is read by evaluate's overview,
label's snapshots by train and evaluate, the trainer's adapters by evaluate and serve), so
the key layout is a contract like the protobuf events. Every key and prefix is built here;
no service spells one. Prefixes end in ``/``; a name such as an objective or a run id never
contains one (objective names and ids are validated before they reach a key).

| prefix | written by | holds |
|---|---|---|
| ``objectives/{name}/`` | the objectives API | one JSON document a version |
| ``raw/{objective}/dt={day}/`` | ingest | redacted events, gzipped JSON lines |
| ``labels/{objective}/`` | label | example segments and the human queue |
| ``datasets/{objective}/{dataset_id}/`` | label | snapshot shards and their manifest |
| ``runs/{objective}/{run_id}/`` | train, the trainer | run record, progress, outcome |
| ``checkpoints/{objective}/{run_id}/`` | the trainer | resumable training state |
| ``adapters/{objective}/{run_id}/`` | the trainer | the LoRA adapter and its metrics |
| ``evaluations/{objective}/{run_id}/`` | evaluate, the evaluator | metrics and the evaluation |
| ``registry/{objective}.json`` | evaluate, serve | the adapter registry |
| ``state/{service}/`` | each service | its own bookkeeping (seen ids, open work) |
"""

from __future__ import annotations

import datetime
import re

MANIFEST = "manifest.json"
"""Name of the manifest inside a dataset snapshot."""

OBJECTIVES = "objectives/"
RAW = "raw/"
LABELS = "labels/"
DATASETS = "datasets/"
RUNS = "runs/"
EVALUATIONS = "evaluations/"
REGISTRY = "registry/"
STATE = "state/"

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_segment(value: str) -> bool:
    """Whether ``value`` (an id from an event) is one safe key segment: no ``/``, no leading
    dot, nothing a path could climb out with."""
    return _SEGMENT.match(value) is not None


def objective_versions(name: str) -> str:
    """Prefix of every version document of objective ``name``."""
    return f"{OBJECTIVES}{name}/"


def objective_version(name: str, version: int) -> str:
    """The document of one objective version (zero-padded, so keys sort by version)."""
    return f"{objective_versions(name)}v{version:06d}.json"


def raw_day(objective: str, day: datetime.date | str) -> str:
    """Prefix of one UTC day of ``objective``'s raw archive."""
    stamp = day if isinstance(day, str) else day.isoformat()
    return f"{RAW}{objective}/dt={stamp}/"


def raw_objective(objective: str) -> str:
    """Prefix of all of ``objective``'s raw archive."""
    return f"{RAW}{objective}/"


def label_examples(objective: str) -> str:
    """Prefix of ``objective``'s labelled example segments."""
    return f"{LABELS}{objective}/examples/"


def label_queue(objective: str) -> str:
    """Prefix of ``objective``'s human labelling queue (tasks, answers, claims, batches)."""
    return f"{LABELS}{objective}/queue/"


def datasets(objective: str) -> str:
    """Prefix of every dataset snapshot of ``objective``."""
    return f"{DATASETS}{objective}/"


def dataset(objective: str, dataset_id: str) -> str:
    """Prefix of one dataset snapshot: its shards and :data:`MANIFEST`."""
    return f"{datasets(objective)}{dataset_id}/"


def runs(objective: str) -> str:
    """Prefix of every training run of ``objective``."""
    return f"{RUNS}{objective}/"


def run(objective: str, run_id: str) -> str:
    """Prefix of one run's record, progress and outcome."""
    return f"{runs(objective)}{run_id}/"


def checkpoints(objective: str, run_id: str) -> str:
    """Prefix of one run's resumable training state."""
    return f"checkpoints/{objective}/{run_id}/"


def adapter(objective: str, run_id: str) -> str:
    """Prefix of the adapter one run produced (what evaluate scores and serve loads)."""
    return f"adapters/{objective}/{run_id}/"


def evaluations(objective: str) -> str:
    """Prefix of every evaluation of ``objective``."""
    return f"{EVALUATIONS}{objective}/"


def evaluation(objective: str, run_id: str) -> str:
    """Prefix of one candidate's evaluation: the evaluator's metrics and the decision."""
    return f"{evaluations(objective)}{run_id}/"


def registry(objective: str) -> str:
    """The adapter registry document of ``objective``."""
    return f"{REGISTRY}{objective}.json"


def service_state(service: str, what: str) -> str:
    """Prefix of one piece of a service's own bookkeeping, e.g. ``state/ingest/seen/``."""
    return f"{STATE}{service}/{what}/"
