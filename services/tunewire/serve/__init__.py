"""The serve service: approved adapters behind an OpenAI-compatible API, kept in sync with
the registry on every replica."""
