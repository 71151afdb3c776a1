"""Tests of the evaluate service: gates, decisions and the launch path."""
