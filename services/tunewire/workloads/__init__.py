"""What runs inside Jobs: the trainer and the evaluator, and the model code they share.

``python -m tunewire.workloads.train`` and ``python -m tunewire.workloads.evaluate`` are the
commands the launchers run. Model loading (the built-in small model included) and prompting
(:mod:`models`, :mod:`data`) are also used by serve's in-process backend, so a model is
served the way it was trained. The package imports no service.
"""
