"""Tests of the workloads: the trainer and evaluator processes, models and scoring."""
