"""Whole-loop tests: the pipeline end to end, faults, the Kubernetes path and PII."""
