"""Tests of the embedded stack and its process supervision."""
