"""Configuration: environment variables, Kafka security options, secrets."""

import ssl

import pytest
from pydantic import ValidationError

from services.config import Settings, settings_help
from services.kafka import client_options


def test_defaults_use_the_embedded_broker(monkeypatch):
    monkeypatch.delenv("SLATRACK_KAFKA_BOOTSTRAP", raising=False)
    settings = Settings()
    assert settings.uses_embedded_broker
    assert settings.bootstrap() == "127.0.0.1:9092"
    assert settings.http_host == "127.0.0.1"
    assert client_options(settings)["bootstrap_servers"] == "127.0.0.1:9092"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("SLATRACK_KAFKA_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("SLATRACK_TOPIC_PARTITIONS", "12")
    settings = Settings()
    assert not settings.uses_embedded_broker
    assert settings.bootstrap() == "kafka-1:9093,kafka-2:9093"
    assert settings.topic_partitions == 12


def test_sasl_needs_credentials(monkeypatch):
    monkeypatch.setenv("SLATRACK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="SLATRACK_KAFKA_SASL_MECHANISM"):
        Settings()


def test_sasl_ssl_options(monkeypatch):
    monkeypatch.setenv("SLATRACK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SLATRACK_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SLATRACK_KAFKA_SASL_USERNAME", "slatrack")
    monkeypatch.setenv("SLATRACK_KAFKA_SASL_PASSWORD", "s3cret-value")
    settings = Settings()
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "slatrack"
    assert options["sasl_plain_password"] == "s3cret-value"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    # The password never shows in a repr or a log line of the settings.
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings.model_dump())


def test_tls_only(monkeypatch):
    monkeypatch.setenv("SLATRACK_KAFKA_SECURITY_PROTOCOL", "SSL")
    options = client_options(Settings())
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_help_lists_every_setting():
    text = settings_help()
    for name in Settings.model_fields:
        assert f"SLATRACK_{name.upper()}" in text
