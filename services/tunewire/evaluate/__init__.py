"""The evaluate service: scores each new adapter, applies the objective's gates, keeps the registry."""
