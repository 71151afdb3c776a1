"""The evaluate service: scores each new adapter, gates it, keeps the adapter registry."""
