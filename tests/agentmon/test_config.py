from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentmon.config import load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AGENTMON_DATA_DIR", "AGENTMON_REGISTRY_URL", "AGENTMON_API_KEY", "AGENTMON_API_PORT"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings()
    assert settings.data_dir == Path("./data")
    assert settings.registry_database_url == f"sqlite:///{(Path('./data') / 'registry.db').resolve()}"
    assert settings.api_key_value is None
    assert settings.api_port == 8000


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTMON_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AGENTMON_API_PORT", "9000")
    monkeypatch.setenv("AGENTMON_API_KEY", "s3cr3t-value")
    monkeypatch.setenv("AGENTMON_REGISTRY_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
    settings = load_settings(api_port=9100, data_dir=None)
    assert settings.api_port == 9100  # the flag wins
    assert settings.data_dir == tmp_path  # an unset flag falls back to the environment
    assert settings.api_key_value == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)  # secrets stay out of logs
    assert settings.registry_database_url == "mysql+pymysql://root@127.0.0.1:3306/test"


def test_empty_api_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMON_API_KEY", "")
    assert load_settings().api_key_value is None


@pytest.mark.parametrize("env,value", [("AGENTMON_API_PORT", "http"), ("AGENTMON_API_PORT", "70000"), ("AGENTMON_LOG_LEVEL", "loud")])
def test_bad_values_are_clear_errors(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as error:
        load_settings()
    assert env.removeprefix("AGENTMON_").lower() in str(error.value)


def test_the_journal_must_hold_the_largest_request() -> None:
    with pytest.raises(ValidationError, match="journal_max_bytes"):
        load_settings(journal_max_bytes=8 * 1024 * 1024, max_request_bytes=16 * 1024 * 1024)
