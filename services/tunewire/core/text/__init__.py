"""Text as every model of an objective sees it: PII redaction and normalisation.

Training data and served requests go through the same code, so a served model reads exactly
what it was trained on (see :mod:`tunewire.core.state.model_input`).
"""
