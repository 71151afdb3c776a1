"""Tests of the shared core: settings, the bus, the store, launchers and HTTP surface."""
