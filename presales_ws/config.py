"""Settings: read once from the environment (and `.env`), validated at start-up, then passed down."""

from __future__ import annotations

import os
from typing import Literal

import msgspec
from environs import Env, EnvError

from presales_ws.speakers import Role, parse_channel_roles

TranscriberName = Literal["auto", "local", "deepgram", "bench-echo"]
EngineName = Literal["local", "deepgram", "bench-echo"]
LogFormat = Literal["auto", "json", "console"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the service. Field names are the environment variables, lower-cased."""

    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: LogFormat = "auto"

    transcriber: TranscriberName = "auto"
    bench_echo: bool = False  # BENCH_ECHO=1 unlocks TRANSCRIBER=bench-echo, the benchmarks' zero-compute engine
    deepgram_api_key: str | None = msgspec.field(default=None)
    deepgram_url: str = "https://api.deepgram.com"
    deepgram_model: str = "nova-3"
    deepgram_language: str = "en"
    deepgram_endpointing_ms: int = 1000
    deepgram_utterance_end_ms: int = 1000
    deepgram_diarize: bool = True
    deepgram_smart_format: bool = True
    deepgram_keepalive_s: float = 4.0
    deepgram_max_outage_s: float = 30.0
    deepgram_final_watchdog_s: float = 5.0
    deepgram_finalize_timeout_s: float = 5.0
    deepgram_buffer_s: float = 60.0
    # Flux (DEEPGRAM_MODEL=flux-*, listen.v2): end-of-turn confidence for the final, for the eager interim
    # (None: no EagerEndOfTurn), and the silence that ends a turn whatever the confidence.
    deepgram_eot_threshold: float = 0.7
    deepgram_eager_eot_threshold: float | None = 0.5
    deepgram_eot_timeout_ms: int = 5000

    local_whisper_model: str | None = None
    local_final_model: Literal["moonshine", "whisper"] = "moonshine"
    local_decode_threads: int = 0
    local_max_streams: int = 0
    local_endpointing_ms: int = 500
    local_interim_interval_ms: int = 1000
    local_max_utterance_s: float = 20.0
    local_vad_threshold: float = 0.5

    turn_detection: Literal["text", "off"] = "text"
    turn_complete_ms: int = 160
    turn_unsure_ms: int = 800
    turn_incomplete_ms: int = 1500

    heartbeat_interval_s: float = 15.0
    heartbeat_timeout_s: float = 45.0
    send_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    max_frame_bytes: int = 64 * 1024
    max_text_frame_bytes: int = 256 * 1024
    outbox_max_messages: int = 512

    api_keys: tuple[str, ...] = msgspec.field(default=())
    allow_query_key: bool = False
    allowed_origins: tuple[str, ...] = ()
    max_sessions: int = 500
    max_sessions_per_key: int = 50
    max_session_s: float = 4 * 3600.0
    rate_limit_factor: float = 2.0
    rate_limit_burst_s: float = 5.0
    drain_timeout_s: float = 20.0
    # A session whose client vanished without `stop` is kept this long for a resume (0: no resume).
    resume_window_s: float = 60.0
    redis_url: str | None = msgspec.field(default=None)  # shared resume state and per-key leases across instances

    channel_roles: tuple[Role, Role] = ("consultant", "customer")
    role_confidence_threshold: float = 0.6
    cors_allow_origins: tuple[str, ...] = ()

    knowledge_base: str | None = None
    suggester_url: str | None = None
    suggester_api_key: str | None = msgspec.field(default=None)
    suggester_timeout_s: float = 2.0
    suggestion_min_confidence: float = 0.5
    suggest_for_unknown_role: bool = True

    def __repr__(self) -> str:
        # Keys never reach a log line, even when someone logs the whole settings object.
        shown = {f: getattr(self, f) for f in self.__struct_fields__}
        for secret in ("deepgram_api_key", "suggester_api_key"):
            if shown[secret]:
                shown[secret] = "***"
        shown["api_keys"] = f"<{len(self.api_keys)} keys>"
        for url in ("deepgram_url", "suggester_url", "redis_url"):  # credentials in a URL (https://user:pass@host/)
            if shown[url] and "@" in shown[url]:
                scheme, _, rest = shown[url].partition("://")
                shown[url] = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def engine(self) -> EngineName:
        """The transcriber this process runs: Deepgram when a key is set, else the embedded one."""
        if self.transcriber != "auto":
            return self.transcriber
        return "deepgram" if self.deepgram_api_key else "local"


def load_settings(dotenv: str | None = ".env") -> Settings:
    """Read the environment (after `.env`, which never overrides real variables) into Settings."""
    env = Env(eager=False)
    if dotenv and os.path.isfile(dotenv):
        env.read_env(dotenv, recurse=False)
    defaults = Settings()
    values = dict(
        environment=env.str("ENVIRONMENT", defaults.environment),
        host=env.str("HOST", defaults.host),
        port=env.int("PORT", defaults.port),
        log_level=env.str("LOG_LEVEL", defaults.log_level),
        log_format=env.str("LOG_FORMAT", defaults.log_format),
        transcriber=env.str("TRANSCRIBER", defaults.transcriber),
        bench_echo=env.bool("BENCH_ECHO", defaults.bench_echo),
        deepgram_api_key=env.str("DEEPGRAM_API_KEY", "") or None,
        deepgram_url=env.str("DEEPGRAM_URL", defaults.deepgram_url),
        deepgram_model=env.str("DEEPGRAM_MODEL", defaults.deepgram_model),
        deepgram_language=env.str("DEEPGRAM_LANGUAGE", defaults.deepgram_language),
        deepgram_endpointing_ms=env.int("DEEPGRAM_ENDPOINTING_MS", defaults.deepgram_endpointing_ms),
        deepgram_utterance_end_ms=env.int("DEEPGRAM_UTTERANCE_END_MS", defaults.deepgram_utterance_end_ms),
        deepgram_diarize=env.bool("DEEPGRAM_DIARIZE", defaults.deepgram_diarize),
        deepgram_smart_format=env.bool("DEEPGRAM_SMART_FORMAT", defaults.deepgram_smart_format),
        deepgram_keepalive_s=env.float("DEEPGRAM_KEEPALIVE_S", defaults.deepgram_keepalive_s),
        deepgram_max_outage_s=env.float("DEEPGRAM_MAX_OUTAGE_S", defaults.deepgram_max_outage_s),
        deepgram_final_watchdog_s=env.float("DEEPGRAM_FINAL_WATCHDOG_S", defaults.deepgram_final_watchdog_s),
        deepgram_finalize_timeout_s=env.float("DEEPGRAM_FINALIZE_TIMEOUT_S", defaults.deepgram_finalize_timeout_s),
        deepgram_buffer_s=env.float("DEEPGRAM_BUFFER_S", defaults.deepgram_buffer_s),
        deepgram_eot_threshold=env.float("DEEPGRAM_EOT_THRESHOLD", defaults.deepgram_eot_threshold),
        deepgram_eager_eot_threshold=_optional_float(
            env.str("DEEPGRAM_EAGER_EOT_THRESHOLD", str(defaults.deepgram_eager_eot_threshold or ""))
        ),
        deepgram_eot_timeout_ms=env.int("DEEPGRAM_EOT_TIMEOUT_MS", defaults.deepgram_eot_timeout_ms),
        local_whisper_model=env.str("LOCAL_WHISPER_MODEL", "") or None,
        local_final_model=env.str("LOCAL_FINAL_MODEL", defaults.local_final_model),
        local_decode_threads=env.int("LOCAL_DECODE_THREADS", defaults.local_decode_threads),
        local_max_streams=env.int("LOCAL_MAX_STREAMS", defaults.local_max_streams),
        local_endpointing_ms=env.int("LOCAL_ENDPOINTING_MS", defaults.local_endpointing_ms),
        local_interim_interval_ms=env.int("LOCAL_INTERIM_INTERVAL_MS", defaults.local_interim_interval_ms),
        local_max_utterance_s=env.float("LOCAL_MAX_UTTERANCE_S", defaults.local_max_utterance_s),
        local_vad_threshold=env.float("LOCAL_VAD_THRESHOLD", defaults.local_vad_threshold),
        turn_detection=env.str("TURN_DETECTION", defaults.turn_detection),
        turn_complete_ms=env.int("TURN_COMPLETE_MS", defaults.turn_complete_ms),
        turn_unsure_ms=env.int("TURN_UNSURE_MS", defaults.turn_unsure_ms),
        turn_incomplete_ms=env.int("TURN_INCOMPLETE_MS", defaults.turn_incomplete_ms),
        heartbeat_interval_s=env.float("HEARTBEAT_INTERVAL_S", defaults.heartbeat_interval_s),
        heartbeat_timeout_s=env.float("HEARTBEAT_TIMEOUT_S", defaults.heartbeat_timeout_s),
        send_timeout_s=env.float("SEND_TIMEOUT_S", defaults.send_timeout_s),
        header_timeout_s=env.float("HEADER_TIMEOUT_S", defaults.header_timeout_s),
        max_frame_bytes=env.int("MAX_FRAME_BYTES", defaults.max_frame_bytes),
        max_text_frame_bytes=env.int("MAX_TEXT_FRAME_BYTES", defaults.max_text_frame_bytes),
        outbox_max_messages=env.int("OUTBOX_MAX_MESSAGES", defaults.outbox_max_messages),
        channel_roles=env.str("CHANNEL_ROLES", ",".join(defaults.channel_roles)),
        role_confidence_threshold=env.float("ROLE_CONFIDENCE_THRESHOLD", defaults.role_confidence_threshold),
        cors_allow_origins=env.list("CORS_ALLOW_ORIGINS", []),
        api_keys=env.list("API_KEYS", []),
        allow_query_key=env.bool("ALLOW_QUERY_KEY", defaults.allow_query_key),
        allowed_origins=env.list("ALLOWED_ORIGINS", []),
        max_sessions=env.int("MAX_SESSIONS", defaults.max_sessions),
        max_sessions_per_key=env.int("MAX_SESSIONS_PER_KEY", defaults.max_sessions_per_key),
        max_session_s=env.float("MAX_SESSION_S", defaults.max_session_s),
        rate_limit_factor=env.float("RATE_LIMIT_FACTOR", defaults.rate_limit_factor),
        rate_limit_burst_s=env.float("RATE_LIMIT_BURST_S", defaults.rate_limit_burst_s),
        drain_timeout_s=env.float("DRAIN_TIMEOUT_S", defaults.drain_timeout_s),
        resume_window_s=env.float("RESUME_WINDOW_S", defaults.resume_window_s),
        redis_url=env.str("REDIS_URL", "") or None,
        knowledge_base=env.str("KNOWLEDGE_BASE", "") or None,
        suggester_url=env.str("SUGGESTER_URL", "") or None,
        suggester_api_key=env.str("SUGGESTER_API_KEY", "") or None,
        suggester_timeout_s=env.float("SUGGESTER_TIMEOUT_S", defaults.suggester_timeout_s),
        suggestion_min_confidence=env.float("SUGGESTION_MIN_CONFIDENCE", defaults.suggestion_min_confidence),
        suggest_for_unknown_role=env.bool("SUGGEST_FOR_UNKNOWN_ROLE", defaults.suggest_for_unknown_role),
    )
    try:
        env.seal()
    except EnvError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings_from_mapping(values)


def _optional_float(raw: str) -> float | str | None:
    """Empty or `off` is None (the feature is off); anything else is left to validation, which names the variable."""
    if raw.strip().lower() in ("", "off"):
        return None
    try:
        return float(raw)
    except ValueError:
        return raw


def settings_from_mapping(values: dict[str, object]) -> Settings:
    """Validate raw values into Settings; errors name the environment variable at fault."""
    raw_roles = values.get("channel_roles")
    if isinstance(raw_roles, str):
        try:
            values["channel_roles"] = parse_channel_roles(raw_roles)
        except ValueError as exc:
            raise ConfigError(f"CHANNEL_ROLES: {exc}") from None
    try:
        settings = msgspec.convert(values, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{_variable_of(exc)}: {exc}") from None
    _check_ranges(settings)
    return settings


def _variable_of(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.local_endpointing_ms`": turn the path back into the variable name.
    text = str(exc)
    if "`$." in text:
        return text.split("`$.", 1)[1].split("`", 1)[0].split("[", 1)[0].upper()
    return "configuration"


def _check_ranges(s: Settings) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("PORT", 0 < s.port < 65536, "must be 1-65535"),
        ("LOCAL_DECODE_THREADS", s.local_decode_threads >= 0, "must be >= 0 (0 = one per core)"),
        ("LOCAL_MAX_STREAMS", s.local_max_streams >= 0, "must be >= 0 (0 = sized from the threads)"),
        ("LOCAL_ENDPOINTING_MS", 100 <= s.local_endpointing_ms <= 5000, "must be 100-5000"),
        ("TURN_COMPLETE_MS", 64 <= s.turn_complete_ms < s.turn_unsure_ms, "must be 64 up to TURN_UNSURE_MS"),
        ("TURN_UNSURE_MS", s.turn_unsure_ms <= s.turn_incomplete_ms, "must be at most TURN_INCOMPLETE_MS"),
        ("TURN_INCOMPLETE_MS", s.turn_incomplete_ms <= 5000, "must be at most 5000"),
        ("LOCAL_INTERIM_INTERVAL_MS", 200 <= s.local_interim_interval_ms <= 10000, "must be 200-10000"),
        # Whisper sees 30 s, and the decoder wants >= 8 s of silence after the speech (transcribers/local.py).
        ("LOCAL_MAX_UTTERANCE_S", 2 <= s.local_max_utterance_s <= 22, "must be 2-22"),
        ("LOCAL_VAD_THRESHOLD", 0 < s.local_vad_threshold < 1, "must be between 0 and 1"),
        ("HEARTBEAT_INTERVAL_S", s.heartbeat_interval_s > 0, "must be > 0"),
        ("HEARTBEAT_TIMEOUT_S", s.heartbeat_timeout_s > s.heartbeat_interval_s, "must exceed HEARTBEAT_INTERVAL_S"),
        ("SEND_TIMEOUT_S", 0.5 <= s.send_timeout_s <= 60, "must be 0.5-60"),
        ("HEADER_TIMEOUT_S", 1 <= s.header_timeout_s <= 120, "must be 1-120"),
        ("MAX_FRAME_BYTES", 1024 <= s.max_frame_bytes <= 16 * 1024 * 1024, "must be 1 KiB-16 MiB"),
        ("MAX_TEXT_FRAME_BYTES", 1024 <= s.max_text_frame_bytes <= 16 * 1024 * 1024, "must be 1 KiB-16 MiB"),
        ("OUTBOX_MAX_MESSAGES", s.outbox_max_messages >= 16, "must be >= 16"),
        ("ROLE_CONFIDENCE_THRESHOLD", 0 < s.role_confidence_threshold <= 1, "must be in (0, 1]"),
        (
            "API_KEYS",
            all(len(k) >= 16 and "," not in k and k.isprintable() for k in s.api_keys),
            "each key must be at least 16 printable characters",
        ),
        ("MAX_SESSIONS", s.max_sessions >= 1, "must be >= 1"),
        ("MAX_SESSIONS_PER_KEY", s.max_sessions_per_key >= 1, "must be >= 1"),
        ("MAX_SESSION_S", s.max_session_s >= 1, "must be >= 1"),
        ("RATE_LIMIT_FACTOR", s.rate_limit_factor >= 1, "must be >= 1 (1 = real time)"),
        ("RATE_LIMIT_BURST_S", s.rate_limit_burst_s >= 0.5, "must be >= 0.5"),
        ("DRAIN_TIMEOUT_S", 1 <= s.drain_timeout_s <= 300, "must be 1-300"),
        ("RESUME_WINDOW_S", 0 <= s.resume_window_s <= 3600, "must be 0-3600 (0 = no resume)"),
        ("REDIS_URL", (s.redis_url or "redis://").startswith(("redis://", "rediss://", "unix://")), "must be redis(s)://"),
        ("SUGGESTER_URL", (s.suggester_url or "http://").startswith(("http://", "https://")), "must be http(s)"),
        # Under the 30 s a stopping session gives its last finals: a question's answer must fit in it.
        ("SUGGESTER_TIMEOUT_S", 0.05 <= s.suggester_timeout_s <= 20, "must be 0.05-20"),
        (
            "RATE_LIMIT_BURST_S",
            s.rate_limit_factor * s.rate_limit_burst_s * 16000 >= s.max_frame_bytes,
            "too small for one MAX_FRAME_BYTES frame of 8 kHz audio: raise it or RATE_LIMIT_FACTOR",
        ),
        ("SUGGESTION_MIN_CONFIDENCE", 0 <= s.suggestion_min_confidence <= 1, "must be 0-1"),
        (
            "DEEPGRAM_URL",
            s.deepgram_url.startswith(("https://", "http://", "wss://", "ws://")),
            "must be an http(s):// or ws(s):// URL",
        ),
        ("DEEPGRAM_ENDPOINTING_MS", 10 <= s.deepgram_endpointing_ms <= 10000, "must be 10-10000"),
        ("DEEPGRAM_UTTERANCE_END_MS", 1000 <= s.deepgram_utterance_end_ms <= 5000, "must be 1000-5000"),
        ("DEEPGRAM_KEEPALIVE_S", 0.1 <= s.deepgram_keepalive_s <= 8, "must be 0.1-8 (Deepgram closes after ~10 s)"),
        ("DEEPGRAM_MAX_OUTAGE_S", s.deepgram_max_outage_s > 0, "must be > 0"),
        ("DEEPGRAM_FINAL_WATCHDOG_S", s.deepgram_final_watchdog_s > 0, "must be > 0"),
        ("DEEPGRAM_FINALIZE_TIMEOUT_S", s.deepgram_finalize_timeout_s > 0, "must be > 0"),
        ("DEEPGRAM_BUFFER_S", s.deepgram_buffer_s >= 5, "must be >= 5"),
        ("DEEPGRAM_EOT_THRESHOLD", 0.5 <= s.deepgram_eot_threshold <= 1.0, "must be 0.5-1.0 (Flux's range)"),
        (
            "DEEPGRAM_EAGER_EOT_THRESHOLD",
            s.deepgram_eager_eot_threshold is None
            or 0.3 <= s.deepgram_eager_eot_threshold <= min(0.9, s.deepgram_eot_threshold),
            "must be 0.3-0.9 and at most DEEPGRAM_EOT_THRESHOLD, or empty/off",
        ),
        ("DEEPGRAM_EOT_TIMEOUT_MS", 500 <= s.deepgram_eot_timeout_ms <= 60000, "must be 500-60000"),
        (
            "TRANSCRIBER",
            not (s.transcriber == "deepgram" and not s.deepgram_api_key),
            "deepgram needs DEEPGRAM_API_KEY",
        ),
        (
            "TRANSCRIBER",
            not (s.transcriber == "bench-echo" and not s.bench_echo),
            "bench-echo transcribes nothing (it echoes frame ids for benchmarks): it needs BENCH_ECHO=1",
        ),
    ]
    for name, ok, why in checks:
        if not ok:
            raise ConfigError(f"{name}: {why}")
    for origin in (*s.cors_allow_origins, *s.allowed_origins):
        if not (origin == "*" or origin.startswith(("chrome-extension://", "http://", "https://"))):
            raise ConfigError(
                f"CORS_ALLOW_ORIGINS/ALLOWED_ORIGINS: {origin!r} is not an origin (chrome-extension://<id>)"
            )
