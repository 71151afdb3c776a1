"""tunewire: business events in, domain-tuned LLM adapters out.

The package holds a shared core, the generated event contracts, one package per service and
the workloads that run inside Kubernetes Jobs. See docs/architecture.md.
"""
