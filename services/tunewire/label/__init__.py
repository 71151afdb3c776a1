"""The label service: records in, labelled examples and versioned dataset snapshots out.

Weak supervision (the objective's rules) labels what it can; conflicts and abstentions go to
a human queue kept in S3, worked through the API or the console's annotate page; examples
are pre-processed, deduplicated, split deterministically and written to S3; when the
objective's trigger fires (or on request) a snapshot is built and announced on
``tunewire.datasets``. See README.md.
"""
