"""The in-process serving backend: one base model and its LoRA adapters, in this process.

Where there is no GPU (the embedded stack, the tests) the serve service runs the base model
itself with transformers and keeps the approved adapters loaded on it with peft; requests
that arrive together share a batch whatever model they name. The only part of serve that
loads torch, and only when this backend is chosen:

- :mod:`server`: :class:`InProcessBackend`, the Backend protocol over a worker thread;
- :mod:`engine`: the model and its adapters, and one ``generate`` call per batch;
- :mod:`generation`: each request's row in a batch: sampling, stop strings, token limits.
"""

from tunewire.serve.in_process.server import InProcessBackend as InProcessBackend
from tunewire.serve.in_process.server import resident_bytes as resident_bytes
