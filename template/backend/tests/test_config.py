"""Settings from the environment and the defaults derived from ENVIRONMENT."""

import pytest

from app.core import config
from app.core.config import Settings, get_settings


def test_lists_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example,")
    monkeypatch.setenv("ALLOWED_HOSTS", "api.example.com")
    settings = Settings()
    assert settings.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    assert settings.ALLOWED_HOSTS == ["api.example.com"]


def test_development_defaults() -> None:
    settings = Settings(ENVIRONMENT="development")
    assert settings.log_format == "text"
    assert settings.access_log is True
    assert settings.docs_enabled is True
    assert settings.hsts_enabled is False


@pytest.mark.parametrize("hardening", [True, False])
def test_production_defaults(monkeypatch: pytest.MonkeyPatch, hardening: bool) -> None:
    # Whichever answer the project was generated with, both must behave as specified.
    monkeypatch.setattr(config, "PRODUCTION_HARDENING", hardening)
    settings = Settings(ENVIRONMENT="production")
    assert settings.log_format == "json"
    assert settings.access_log is False
    assert settings.docs_enabled is not hardening
    assert settings.hsts_enabled is hardening


def test_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("ACCESS_LOG", "true")
    monkeypatch.setenv("DOCS_ENABLED", "true")
    settings = Settings()
    assert settings.log_format == "text"
    assert settings.access_log is True
    assert settings.docs_enabled is True


def test_invalid_environment_is_refused() -> None:
    with pytest.raises(ValueError, match="ENVIRONMENT"):
        Settings(ENVIRONMENT="staging")  # type: ignore[arg-type]


def test_settings_are_read_once() -> None:
    assert get_settings() is get_settings()
