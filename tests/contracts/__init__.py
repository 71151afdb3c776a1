"""Tests of the wire contracts: generated code, round trips and field numbers."""
