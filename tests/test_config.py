"""Settings come from the environment and `.env`; a bad value stops start-up naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from presales_ws.config import ConfigError, Settings, declared_fields, load_settings, variable

ENV_EXAMPLE = Path(__file__).parent.parent / ".env.example"


def test_defaults_run_the_embedded_transcriber(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    settings = load_settings()
    assert settings.engine == "local"
    assert settings.heartbeat_interval_s == 15 and settings.heartbeat_timeout_s == 45
    assert settings.local_endpointing_ms == 500
    assert settings.channel_roles == ("consultant", "customer")


def test_dotenv_is_read_and_real_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LOCAL_ENDPOINTING_MS=700\nHEARTBEAT_INTERVAL_S=5\n")
    monkeypatch.setenv("HEARTBEAT_INTERVAL_S", "7")
    monkeypatch.delenv("LOCAL_ENDPOINTING_MS", raising=False)
    settings = load_settings()
    assert settings.local_endpointing_ms == 700
    assert settings.heartbeat_interval_s == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("LOCAL_ENDPOINTING_MS", "-1"),
        ("HEARTBEAT_TIMEOUT_S", "1"),
        ("CHANNEL_ROLES", "customer,boss"),
        ("TRANSCRIBER", "whisper"),
        ("LOG_FORMAT", "xml"),
        ("CORS_ALLOW_ORIGINS", "evil"),
        ("DEEPGRAM_URL", "api.deepgram.com"),
        ("DEEPGRAM_KEEPALIVE_S", "12"),
        ("DEEPGRAM_DIARIZE", "maybe"),
        ("DEEPGRAM_EOT_THRESHOLD", "0.4"),
        ("DEEPGRAM_EAGER_EOT_THRESHOLD", "0.8"),  # above DEEPGRAM_EOT_THRESHOLD (0.7)
        ("DEEPGRAM_EAGER_EOT_THRESHOLD", "soon"),
        ("DEEPGRAM_EOT_TIMEOUT_MS", "100"),
        ("SUGGESTER_TIMEOUT_S", "25"),  # past the 30 s a stopping session waits for its last finals
        ("SUGGESTER_URL", "ftp://ai.example"),
        ("SUGGESTION_MIN_CONFIDENCE", "1.5"),
        ("RATE_LIMIT_BURST_S", "0.5"),  # with MAX_FRAME_BYTES=65536 below: a whole frame would never fit
        ("LOCAL_MAX_UTTERANCE_S", "28"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAX_FRAME_BYTES", "65536")
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_flux_eager_end_of_turn_is_on_by_default_and_off_when_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEEPGRAM_EAGER_EOT_THRESHOLD", raising=False)
    assert load_settings().deepgram_eager_eot_threshold == 0.5
    for off in ("", "off"):
        monkeypatch.setenv("DEEPGRAM_EAGER_EOT_THRESHOLD", off)
        assert load_settings().deepgram_eager_eot_threshold is None


def test_deepgram_key_never_shows_in_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg_secret_123")
    monkeypatch.setenv("SUGGESTER_API_KEY", "ai_secret_456")
    monkeypatch.setenv("SUGGESTER_URL", "https://bot:url_secret_789@ai.example/suggest")
    settings = load_settings()
    assert settings.engine == "deepgram"
    for secret in ("dg_secret_123", "ai_secret_456", "url_secret_789"):
        assert secret not in repr(settings)
    assert "https://***@ai.example/suggest" in repr(settings)


def test_no_setting_selects_the_benchmarks_echo_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine that transcribes nothing is given to create_app by the benchmarks, never chosen by a setting."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSCRIBER", "bench-echo")
    with pytest.raises(ConfigError, match="TRANSCRIBER"):
        load_settings()


def test_env_example_documents_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`.env.example` and the declarations agree: the same variables, and its values are the defaults."""
    documented = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE))
    declared = {variable(field.name) for field in declared_fields()}
    assert sorted(declared - documented.keys()) == [], "declared in config.py, missing from .env.example"
    assert sorted(documented.keys() - declared) == [], "in .env.example, declared nowhere"
    monkeypatch.chdir(tmp_path)
    for name in declared:
        monkeypatch.delenv(name, raising=False)
    from_example, defaults = load_settings(dotenv=str(ENV_EXAMPLE)), Settings()
    differ = [variable(f) for f in Settings.__struct_fields__ if getattr(from_example, f) != getattr(defaults, f)]
    assert differ == [], "values in .env.example that are not the declared defaults"
