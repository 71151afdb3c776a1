"""Settings shared by every service: Kafka, S3, HTTP and API tokens.

Each service subclasses :class:`ServiceSettings` with its own fields. Values come from
environment variables with the ``TUNEWIRE_`` prefix; nested groups use a double underscore,
e.g. ``TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS``. Settings are built once in a service's
``__main__`` and passed explicitly; there is no module-level singleton.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunewire.core.base import principals as principals_


class Environment(enum.StrEnum):
    """Where a service runs; production refuses placeholder secrets."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster and how the consumer group behaves."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of the brokers."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Production refuses the two unencrypted
    ones unless ``allow_plaintext`` is set."""
    allow_plaintext: bool = False
    """The operator's explicit consent to unencrypted Kafka (PLAINTEXT or SASL_PLAINTEXT) in
    production, where events, redaction-free raw payloads and control messages would cross the
    network in the clear."""
    sasl_mechanism: str | None = None
    """For example SCRAM-SHA-512 when SASL is used."""
    sasl_username: str | None = None
    """SASL user name; used only when ``sasl_mechanism`` is set."""
    sasl_password: SecretStr | None = None
    """SASL password; used only when ``sasl_mechanism`` is set, never logged."""
    ssl_cafile: str | None = None
    """Path to the CA bundle that signs the brokers' certificates."""
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    """Consumer group session timeout. The embedded broker wants ~2000 for fast joins."""
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    """Consumer heartbeat; keep it under a third of the session timeout."""
    fetch_max_wait_ms: int = Field(default=500, ge=0)
    """How long the broker may hold a fetch waiting for data. The embedded broker (tansu)
    sometimes holds it the full time although records wait, so the stack sets 100."""
    max_poll_records: int = Field(default=500, ge=1)
    """Messages fetched per poll; one poll is handled before the next."""
    linger_ms: int = Field(default=5, ge=0)
    """Producer batching delay: a few milliseconds buys large batches."""
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    """How long a produce or fetch request may take before it is retried."""
    handler_attempts: int = Field(default=3, ge=1)
    """How often a failing message is tried before it goes to the DLQ."""
    retry_backoff_s: float = Field(default=0.2, ge=0)
    """First back-off between attempts; doubles each time."""

    @property
    def is_encrypted(self) -> bool:
        """Whether traffic to the brokers goes over TLS."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_options(self) -> dict[str, object]:
        """Connection options shared by producers, consumers and admin clients."""
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.ssl_cafile:
            options["ssl_cafile"] = self.ssl_cafile
        return options


class S3Settings(BaseModel):
    """Where artifacts live. Credentials come from boto3's standard chain (IRSA, env, profile)."""

    bucket: str = "tunewire"
    """The bucket that holds every tunewire artifact (objectives, records, datasets, runs,
    adapters, the registry)."""
    endpoint_url: str | None = None
    """Set for MinIO, Ceph or the embedded endpoint; empty means AWS S3."""
    region: str | None = None
    """The S3 client's region; None leaves it to boto3's standard chain."""
    max_attempts: int = Field(default=8, ge=1)
    """botocore retry attempts (adaptive mode) before a call fails."""


class HttpSettings(BaseModel):
    """The service's HTTP listener (API, probes, metrics)."""

    host: str = "0.0.0.0"
    """Address the HTTP server binds to; the default listens on every interface."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the API, ``/healthz``, ``/readyz`` and ``/metrics``."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Longest request body, refused with 413 before it is read (ingest's events and serve's
    model API have limits of their own, which raise it)."""


class WorkloadSettings(BaseSettings):
    """What every tunewire process reads: where Kafka and S3 are, and how much to log.

    The trainer and evaluator workloads (run in Jobs) use it as it is; services extend it
    with their HTTP listener and API tokens.
    """

    model_config = SettingsConfigDict(
        env_prefix="TUNEWIRE_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Environment = Environment.PRODUCTION
    """Production refuses placeholder tokens and an install without principals."""
    kafka: KafkaSettings = KafkaSettings()
    """The brokers and the client's behaviour (``TUNEWIRE_KAFKA__*``)."""
    s3: S3Settings = S3Settings()
    """The artifact bucket and its endpoint (``TUNEWIRE_S3__*``)."""
    log_level: str = "INFO"
    """Level of the process's JSON log lines (``DEBUG``, ``INFO``, ``WARNING``, ...); the
    Kafka, botocore and urllib3 clients log warnings and above only."""
    model_cache: str = "~/.cache/tunewire/models"
    """Where base models are cached on local disk (built-in models are built here)."""

    @model_validator(mode="after")
    def _refuse_unencrypted_kafka(self) -> WorkloadSettings:
        if (
            self.environment is Environment.PRODUCTION
            and not self.kafka.is_encrypted
            and not self.kafka.allow_plaintext
        ):
            raise ValueError(
                f"TUNEWIRE_KAFKA__SECURITY_PROTOCOL={self.kafka.security_protocol} sends events "
                "and control messages unencrypted; production needs SSL or SASL_SSL, or "
                "TUNEWIRE_KAFKA__ALLOW_PLAINTEXT=true to accept the risk"
            )
        return self


class ServiceSettings(WorkloadSettings):
    """Base of every service's settings."""

    http: HttpSettings = HttpSettings()
    """The HTTP listener (``TUNEWIRE_HTTP__*``)."""
    principals: list[principals_.Principal] = []
    """Who may call the HTTP APIs, with which roles (``TUNEWIRE_PRINCIPALS``, a JSON list of
    ``{"name", "token_sha256", "roles", ...}`` from a Secret)."""

    @model_validator(mode="after")
    def _refuse_placeholder_tokens(self) -> ServiceSettings:
        if self.environment is Environment.PRODUCTION:
            if not self.principals:
                raise ValueError(
                    "TUNEWIRE_PRINCIPALS must name at least one principal in production"
                )
            weak = principals_.placeholder_principals(self.principals)
            if weak:
                raise ValueError(
                    f"TUNEWIRE_PRINCIPALS: the token of {', '.join(weak)} is a placeholder; "
                    "make real ones with `tunewire principal NAME --role ROLE`"
                )
        return self
