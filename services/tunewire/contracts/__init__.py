"""The event contracts every tunewire service speaks, as Python protobuf classes.

Generated code lives in v1/, never edit by hand; regenerate with `make contracts`
(`python proto/generate.py`), from the sources in proto/tunewire/v1/.
"""
