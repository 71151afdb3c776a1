"""Tests of the serve service: request parsing, backends, replicas and the API."""
