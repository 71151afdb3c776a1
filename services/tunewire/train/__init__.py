"""The train service: dataset snapshots in, LoRA training runs on the GPU budget out.

Each ``tunewire.datasets`` event queues one run (its id derived from the dataset id); the
scheduler starts queued runs within ``max_running`` and the GPU budget, fairly across
objectives, as trainer workloads through the configured launcher (Kubernetes Jobs or local
subprocesses). :class:`controller.RunController` follows each run to its one terminal event on
``tunewire.training``; the HTTP API lists, submits and cancels runs. See README.md.
"""
