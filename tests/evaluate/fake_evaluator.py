"""A stand-in evaluator for the launch-path test: the evaluator's arguments, no torch.

Run as ``python -m tests.evaluate.fake_evaluator`` with the arguments the evaluate service
gives ``tunewire.workloads.evaluate``; it writes a metrics.json in the evaluator's format,
with the candidate's accuracy taken from ``FAKE_EVALUATOR_ACCURACY``, to S3 as configured by
``TUNEWIRE_S3__*``, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys

from tunewire.core.base import settings, store

MODULE = "tests.evaluate.fake_evaluator"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE)
    for name in ("--objective", "--run-id", "--dataset-id", "--output-key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--objective-version", type=int, required=True)
    args, _ = parser.parse_known_args(argv)
    accuracy = float(os.environ.get("FAKE_EVALUATOR_ACCURACY", "0.9"))
    artifacts = store.ArtifactStore(settings.WorkloadSettings().s3)
    artifacts.put_json(
        args.output_key,
        {
            "objective": args.objective,
            "objective_version": args.objective_version,
            "run_id": args.run_id,
            "dataset_id": args.dataset_id,
            "task": "classification",
            "examples": 10,
            "base": {"model_ref": "base", "values": {"accuracy": 0.25}, "examples": 10},
            "champion": None,
            "candidate": {
                "model_ref": args.run_id,
                "values": {"accuracy": accuracy},
                "examples": 10,
            },
            "disagreements": [],
            "seconds": 0.1,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
