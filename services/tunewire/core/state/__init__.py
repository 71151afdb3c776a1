"""The S3 documents every service agrees on, and where in the bucket they live.

:mod:`layout` builds every shared key; :mod:`objectives`, :mod:`registry`, :mod:`outcomes`
and :mod:`idempotency` read and write their documents with S3's conditional writes, so
replicas and services coordinate without a database.
"""
