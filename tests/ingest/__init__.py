"""Tests of the ingest service: objectives, events in over HTTP and Kafka, redaction, outages."""
