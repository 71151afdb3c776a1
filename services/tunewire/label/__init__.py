"""The label service: records in, labelled examples and versioned dataset snapshots out.

Weak supervision (the objective's rules) labels what it can; conflicts and abstentions go to
a human queue; examples are pre-processed, deduplicated, split deterministically and written
to S3; when the objective's trigger fires a snapshot is built and announced. See README.md.
"""
