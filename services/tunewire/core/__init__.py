"""Shared core of every tunewire service.

Settings, the Kafka bus, the S3 artifact store, probes and metrics, JSON logging, the task
runner and the objective catalogue live here once, so that no service keeps its own copy.
The core imports no service package.
"""
