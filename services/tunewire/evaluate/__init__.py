"""The evaluate service: trained adapters in, gated decisions and the adapter registry out.

Each succeeded training run gets an evaluator workload (launched like the trainer) that
scores the base model, the current champion and the candidate on the same held-out examples.
:class:`controller.EvaluationController` applies the objective's gates to those metrics,
records the decision in the registry (an approval makes the candidate champion) and
publishes it on ``tunewire.evaluations``; with ``approval: manual`` a person decides through
the API, the CLI or the console. The service also serves the console's review, history and
overview pages. See README.md.
"""
