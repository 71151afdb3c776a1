"""Service settings: read from TUNEWIRE_* variables, and refusing weak tokens in production
(principals themselves: tests/core/test_authorization.py)."""

from __future__ import annotations

import json
import os

import pydantic
import pytest
from pydantic import SecretStr

from tunewire.core.base.principals import Principal, Role, token_digest
from tunewire.core.base.settings import (
    Environment,
    KafkaSettings,
    ServiceSettings,
    WorkloadSettings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TUNEWIRE_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("TUNEWIRE_"):
            monkeypatch.delenv(name)


def principal(name: str, token: str) -> Principal:
    return Principal(name=name, token_sha256=token_digest(token), roles=frozenset({Role.VIEWER}))


REAL = principal("ops", "a7f3c1d9e2-a-real-token-of-some-length")
TLS = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")


def test_production_is_the_default_and_refuses_running_without_principals() -> None:
    with pytest.raises(pydantic.ValidationError, match="at least one principal in production"):
        ServiceSettings(kafka=TLS)


@pytest.mark.parametrize("token", ["dev-token", "changeme", "change-me", "secret", ""])
def test_production_refuses_a_placeholder_token(token: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="the token of weak is a placeholder"):
        ServiceSettings(
            environment=Environment.PRODUCTION,
            principals=[REAL, principal("weak", token)],
            kafka=TLS,
        )


def test_production_accepts_real_tokens() -> None:
    config = ServiceSettings(principals=[REAL], kafka=TLS)

    assert config.environment is Environment.PRODUCTION
    assert config.principals == [REAL]


def test_development_accepts_no_principals_and_placeholders() -> None:
    assert ServiceSettings(environment=Environment.DEVELOPMENT).principals == []
    weak = principal("weak", "dev-token")
    config = ServiceSettings(environment=Environment.DEVELOPMENT, principals=[weak])
    assert config.principals == [weak]


def test_placeholder_tokens_in_the_environment_stop_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weak = principal("weak", "changeme").model_dump(mode="json")
    monkeypatch.setenv("TUNEWIRE_PRINCIPALS", json.dumps([weak]))
    monkeypatch.setenv("TUNEWIRE_KAFKA__SECURITY_PROTOCOL", "SSL")

    with pytest.raises(pydantic.ValidationError, match="placeholder"):
        ServiceSettings()


def test_values_come_from_prefixed_and_nested_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNEWIRE_ENVIRONMENT", "production")
    monkeypatch.setenv("TUNEWIRE_PRINCIPALS", json.dumps([REAL.model_dump(mode="json")]))
    monkeypatch.setenv("TUNEWIRE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("TUNEWIRE_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("TUNEWIRE_KAFKA__SESSION_TIMEOUT_MS", "2000")
    monkeypatch.setenv("TUNEWIRE_S3__BUCKET", "models")
    monkeypatch.setenv("TUNEWIRE_S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("TUNEWIRE_HTTP__PORT", "9999")
    monkeypatch.setenv("KAFKA__BOOTSTRAP_SERVERS", "unprefixed:1")

    config = ServiceSettings()

    assert config.principals == [REAL]
    assert config.log_level == "DEBUG"
    assert config.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert config.kafka.session_timeout_ms == 2000
    assert config.kafka.client_options()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert config.s3.bucket == "models"
    assert config.s3.endpoint_url == "http://127.0.0.1:9000"
    assert config.http.port == 9999


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_production_refuses_unencrypted_kafka_without_explicit_consent(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEWIRE_PRINCIPALS", json.dumps([REAL.model_dump(mode="json")]))
    monkeypatch.setenv("TUNEWIRE_KAFKA__SECURITY_PROTOCOL", protocol)
    with pytest.raises(pydantic.ValidationError, match=f"{protocol} sends events"):
        ServiceSettings()
    # The trainer and evaluator Jobs read the same check.
    with pytest.raises(pydantic.ValidationError, match="TUNEWIRE_KAFKA__ALLOW_PLAINTEXT=true"):
        WorkloadSettings()

    monkeypatch.setenv("TUNEWIRE_KAFKA__ALLOW_PLAINTEXT", "true")
    assert ServiceSettings().kafka.security_protocol == protocol
    assert WorkloadSettings().kafka.allow_plaintext


def test_development_accepts_plaintext_kafka_and_any_protocol_name_is_checked() -> None:
    assert WorkloadSettings(environment=Environment.DEVELOPMENT).kafka.security_protocol == (
        "PLAINTEXT"
    )
    with pytest.raises(pydantic.ValidationError, match="security_protocol"):
        KafkaSettings(security_protocol="TLS")  # type: ignore[arg-type]


def test_an_out_of_range_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEWIRE_ENVIRONMENT", "development")
    monkeypatch.setenv("TUNEWIRE_KAFKA__SESSION_TIMEOUT_MS", "10")

    with pytest.raises(pydantic.ValidationError, match="session_timeout_ms"):
        ServiceSettings()


def test_client_options_without_sasl_carry_no_credentials() -> None:
    options = KafkaSettings(bootstrap_servers="b1:9092,b2:9092").client_options()

    assert options == {
        "bootstrap_servers": ["b1:9092", "b2:9092"],
        "security_protocol": "PLAINTEXT",
        "request_timeout_ms": 30_000,
    }


def test_sasl_credentials_are_passed_only_with_a_mechanism() -> None:
    without = KafkaSettings(sasl_username="svc", sasl_password=SecretStr("pw")).client_options()
    assert not any(key.startswith("sasl_") for key in without)

    options = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("pw"),
        ssl_cafile="/etc/ca.pem",
    ).client_options()

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == "pw"
    assert options["ssl_cafile"] == "/etc/ca.pem"
