"""The ingest service: business events in, validated and PII-redacted records out.

Events arrive on ``tunewire.events.raw`` (CloudEvents binary or structured JSON, or plain
JSON) and over ``POST /v1/events``. Each ends as exactly one record on ``tunewire.records``,
a counted duplicate, or a DLQ entry / HTTP error naming what was wrong. Redacted events are
archived to S3. The pure rules (objective, validation, redaction, the record) are
:mod:`handlers`; large polls are prepared in worker processes (:mod:`parallel`). Ingest also
serves the objectives API (:mod:`objectives_api`). See README.md beside this file.
"""
