"""Tests of the label service: rules, the human queue, examples and dataset snapshots."""
