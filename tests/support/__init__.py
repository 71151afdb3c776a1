"""Helpers the tests share: doubles, stacks, waiting and fixture-free utilities."""
