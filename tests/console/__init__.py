"""Tests of the console in a real browser and over HTTP."""
