"""Kafka, the way every service uses it: topics, the CloudEvents envelope, producing, consuming.

A service publishes through :mod:`producing` (or :mod:`producer_process`, whose client runs
in a child process), consumes through the loop in :mod:`consuming` (handle, make durable,
then commit), and moves pure CPU-bound work to worker processes with :mod:`pooling`.
"""
