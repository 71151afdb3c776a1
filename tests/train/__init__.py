"""Tests of the train service: scheduling and runs on the embedded stack."""
