"""Settings: each declared once below (type, default, bounds, meaning), read from the environment (and `.env`)
in one loop, validated at start-up, then passed down.

A field's name is its environment variable, lower-cased. Adding a setting is one edit here: a field with its
type, its bounds and meaning in `Meta(...)` and its default; then its line in `.env.example` (a test checks that
every field is there, with its default). `T | None` is optional: an empty variable is None. Only the rules that
tie two settings together live outside the fields, in `RELATIONS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec
import msgspec.inspect as mi
from environs import Env, EnvError
from msgspec import Meta

from presales_ws.speakers import Role, parse_channel_roles

TranscriberName = Literal["auto", "local", "deepgram"]
EngineName = Literal["local", "deepgram"]
LogFormat = Literal["auto", "json", "console"]
MIB = 1024 * 1024
WORST_CASE_AUDIO_BYTES_PER_S = 16000  # 8 kHz s16 mono: the slowest audio one MAX_FRAME_BYTES frame may carry

Origin = Annotated[str, Meta(pattern=r"^(\*$|chrome-extension://|https?://)", description="* or scheme://...")]
ApiKey = Annotated[str, Meta(min_length=16, pattern=r"^[^,\x00-\x1f\x7f]*$", description="16+ printable chars")]
FrameBytes = Annotated[int, Meta(ge=1024, le=16 * MIB, description="1 KiB-16 MiB")]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the service. Field names are the environment variables, lower-cased."""

    # --- service
    environment: Annotated[
        Literal["development", "production"], Meta(description="production: JSON logs, CORS only as listed")
    ] = "development"
    host: Annotated[str, Meta(description="where `presales-ws serve` listens")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    log_level: Annotated[str, Meta(description="debug | info | warning | error")] = "info"
    log_format: Annotated[LogFormat, Meta(description="auto: JSON unless a terminal in development")] = "auto"
    log_transcripts: Annotated[bool, Meta(description="each final's text logged: personal data")] = False

    # --- transcriber
    transcriber: Annotated[TranscriberName, Meta(description="auto: Deepgram with a key, else local")] = "auto"
    deepgram_api_key: Annotated[str | None, Meta(description="never logged")] = None
    deepgram_url: Annotated[str, Meta(pattern=r"^(https?|wss?)://", description="http(s):// or ws(s)://")] = (
        "https://api.deepgram.com"
    )
    deepgram_model: Annotated[str, Meta(description="nova-3 (listen.v1) or flux-general-en (listen.v2)")] = "nova-3"
    deepgram_language: str = "en"
    deepgram_endpointing_ms: Annotated[int, Meta(ge=10, le=10000, description="silence that ends a final")] = 1000
    deepgram_utterance_end_ms: Annotated[int, Meta(ge=1000, le=5000, description="gap for UtteranceEnd")] = 1000
    deepgram_diarize: Annotated[bool, Meta(description="speaker labels on one-channel sessions")] = True
    deepgram_smart_format: bool = True
    deepgram_keepalive_s: Annotated[float, Meta(ge=0.1, le=8, description="Deepgram closes after ~10 s idle")] = 4.0
    deepgram_max_outage_s: Annotated[float, Meta(gt=0, description="reconnect attempts, then 1011")] = 30.0
    deepgram_final_watchdog_s: Annotated[float, Meta(gt=0, description="no final this long: Finalize")] = 5.0
    deepgram_finalize_timeout_s: Annotated[float, Meta(gt=0, description="after stop: wait for Finalize")] = 5.0
    deepgram_buffer_s: Annotated[float, Meta(ge=5, description="audio kept for replay after a reconnect")] = 60.0
    # Flux (DEEPGRAM_MODEL=flux-*, listen.v2): end-of-turn confidence for the final, for the eager interim
    # (None: no EagerEndOfTurn), and the silence that ends a turn whatever the confidence.
    deepgram_eot_threshold: Annotated[float, Meta(ge=0.5, le=1.0, description="Flux's range")] = 0.7
    deepgram_eager_eot_threshold: Annotated[float, Meta(ge=0.3, le=0.9, description="empty/off: none")] | None = 0.5
    deepgram_eot_timeout_ms: Annotated[int, Meta(ge=500, le=60000)] = 5000

    # --- embedded transcriber
    local_whisper_model: Annotated[str | None, Meta(description="CTranslate2 dir; empty: tiny.en shipped")] = None
    local_final_model: Literal["moonshine", "whisper"] = "moonshine"
    local_decode_threads: Annotated[int, Meta(ge=0, description="0 = one per core")] = 0
    local_max_streams: Annotated[int, Meta(ge=0, description="0 = 4 per decode thread")] = 0
    local_endpointing_ms: Annotated[int, Meta(ge=100, le=5000, description="pause that ends TURN_DETECTION=off")] = 500
    local_interim_interval_ms: Annotated[int, Meta(ge=200, le=10000, description="new speech per interim")] = 1000
    # Whisper sees 30 s, and the decoder wants >= 8 s of silence after the speech (transcribers/local.py).
    local_max_utterance_s: Annotated[float, Meta(ge=2, le=22, description="longer speech is cut")] = 20.0
    local_vad_threshold: Annotated[float, Meta(gt=0, lt=1, description="Silero speech probability")] = 0.5

    # --- end of turn
    turn_detection: Annotated[Literal["text", "off"], Meta(description="off: fixed silence")] = "text"
    turn_complete_ms: Annotated[int, Meta(ge=64, description="pause that ends a complete sentence")] = 160
    turn_unsure_ms: Annotated[int, Meta(description="pause that ends words with no sign either way")] = 800
    turn_incomplete_ms: Annotated[int, Meta(le=5000, description="pause words that go on may take")] = 1500
    turn_decode_ahead_ms: Annotated[
        int, Meta(ge=32, le=5000, description="embedded: pause at which words are read (<= TURN_COMPLETE_MS)")
    ] = 96
    turn_full_stop_threshold: Annotated[
        float, Meta(ge=0, le=1, description="embedded: a full stop the model gives below this is none (0 = off)")
    ] = 0.5

    # --- sessions
    heartbeat_interval_s: Annotated[float, Meta(gt=0, description="server pings")] = 15.0
    heartbeat_timeout_s: Annotated[float, Meta(description="silent clients closed (4408)")] = 45.0
    send_timeout_s: Annotated[float, Meta(ge=0.5, le=60, description="a write stuck this long ends (4499)")] = 10.0
    header_timeout_s: Annotated[float, Meta(ge=1, le=120, description="an HTTP request head (slowloris)")] = 10.0
    max_frame_bytes: FrameBytes = 64 * 1024
    max_text_frame_bytes: FrameBytes = 256 * 1024
    outbox_max_messages: Annotated[int, Meta(ge=16, description="queued for a slow reader")] = 512

    # --- who may connect, limits
    api_keys: Annotated[tuple[ApiKey, ...], Meta(description="empty: anyone may connect")] = ()
    allow_query_key: Annotated[bool, Meta(description="also ?key= (URLs end up in logs)")] = False
    allowed_origins: Annotated[tuple[Origin, ...], Meta(description="browser origins that may open sessions")] = ()
    max_sessions: Annotated[int, Meta(ge=1, description="per process (1013)")] = 500
    max_sessions_per_key: Annotated[int, Meta(ge=1, description="per API key (4429)")] = 50
    max_session_s: Annotated[float, Meta(ge=1, description="longest session (4410)")] = 4 * 3600.0
    rate_limit_factor: Annotated[float, Meta(ge=1, description="times real time (1 = real time)")] = 2.0
    rate_limit_burst_s: Annotated[float, Meta(ge=0.5, description="seconds of audio before the limit")] = 5.0
    drain_timeout_s: Annotated[float, Meta(ge=1, le=300, description="on SIGTERM, to flush finals")] = 20.0
    # A session whose client vanished without `stop` is kept this long for a resume (docs/PROTOCOL.md, "Resume").
    resume_window_s: Annotated[float, Meta(ge=0, le=3600, description="kept for a resume; 0: no resume")] = 60.0
    redis_url: (
        Annotated[str, Meta(pattern=r"^(rediss?|unix)://", description="shared resume state, per-key leases")] | None
    ) = None

    # --- roles, CORS
    channel_roles: Annotated[tuple[Role, Role], Meta(description="roles of channel 0, channel 1")] = (
        "consultant",
        "customer",
    )
    role_confidence_threshold: Annotated[float, Meta(gt=0, le=1, description="evidence for a role")] = 0.6
    cors_allow_origins: Annotated[
        tuple[Origin, ...], Meta(description="origins for the HTTP routes; empty: ALLOWED_ORIGINS")
    ] = ()

    # --- suggestions
    knowledge_base: Annotated[str | None, Meta(description="question/answer pairs (Markdown or YAML)")] = None
    suggester_url: Annotated[str, Meta(pattern=r"^https?://", description="the AI team's service")] | None = None
    suggester_api_key: Annotated[str | None, Meta(description="Bearer for SUGGESTER_URL; never logged")] = None
    # Under the 30 s a stopping session gives its last finals: a question's answer must fit in it.
    suggester_timeout_s: Annotated[float, Meta(ge=0.05, le=20, description="given up on after")] = 2.0
    suggestion_min_confidence: Annotated[float, Meta(ge=0, le=1, description="answers below are not sent")] = 0.5
    suggest_for_unknown_role: Annotated[bool, Meta(description="answer before the role is known")] = True

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


# Rules between settings, which no one field can say: (variable at fault, holds, why).
RELATIONS: tuple[tuple[str, Callable[[Settings], bool], str], ...] = (
    ("TURN_COMPLETE_MS", lambda s: s.turn_complete_ms < s.turn_unsure_ms, "must be below TURN_UNSURE_MS"),
    ("TURN_UNSURE_MS", lambda s: s.turn_unsure_ms <= s.turn_incomplete_ms, "must be at most TURN_INCOMPLETE_MS"),
    (
        "HEARTBEAT_TIMEOUT_S",
        lambda s: s.heartbeat_timeout_s > s.heartbeat_interval_s,
        "must exceed HEARTBEAT_INTERVAL_S",
    ),
    (
        "RATE_LIMIT_BURST_S",
        lambda s: s.rate_limit_factor * s.rate_limit_burst_s * WORST_CASE_AUDIO_BYTES_PER_S >= s.max_frame_bytes,
        "too small for one MAX_FRAME_BYTES frame of 8 kHz audio: raise it or RATE_LIMIT_FACTOR",
    ),
    (
        "DEEPGRAM_EAGER_EOT_THRESHOLD",
        lambda s: s.deepgram_eager_eot_threshold is None or s.deepgram_eager_eot_threshold <= s.deepgram_eot_threshold,
        "must be at most DEEPGRAM_EOT_THRESHOLD, or empty/off",
    ),
    (
        "TRANSCRIBER",
        lambda s: s.transcriber != "deepgram" or bool(s.deepgram_api_key),
        "deepgram needs DEEPGRAM_API_KEY",
    ),
)

# Variables whose text needs more than its type to read; the rest are read by environs as their declared type.
PARSERS: dict[str, Callable[[str], object]] = {"channel_roles": parse_channel_roles}


def declared_fields() -> tuple[mi.Field, ...]:
    """Every setting as msgspec sees it: name, type with its bounds and description, default."""
    info = mi.type_info(Settings)
    assert isinstance(info, mi.StructType)
    return info.fields


def variable(field: str) -> str:
    """The environment variable of a Settings field."""
    return field.upper()


def load_settings(dotenv: str | None = ".env") -> Settings:
    """Read the environment (after `.env`, which never overrides real variables) into Settings."""
    env = Env(eager=False)
    if dotenv and os.path.isfile(dotenv):
        env.read_env(dotenv, recurse=False)
    values: dict[str, object] = {}
    for field in declared_fields():
        if env.str(variable(field.name), None) is not None:  # unset: the declared default
            values[field.name] = _read(env, field.name, field.type)
    try:
        env.seal()
    except EnvError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings_from_mapping(values)


def _read(env: Env, field: str, kind: mi.Type) -> object:
    """One variable as its declared type: environs parses, `settings_from_mapping` checks the bounds."""
    name = variable(field)
    if field in PARSERS:
        try:
            return PARSERS[field](env.str(name))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    kind = _bare(kind)
    if isinstance(kind, mi.UnionType):  # T | None: empty (or `off`, for a number) is None
        raw = env.str(name).strip()
        kinds = [_bare(k) for k in kind.types if not isinstance(k, mi.NoneType)]
        numeric = any(isinstance(k, mi.IntType | mi.FloatType) for k in kinds)
        if raw == "" or (numeric and raw.lower() == "off"):
            return None
        return _read(env, field, kinds[0])
    readers: list[tuple[type[mi.Type], Callable[[str], object]]] = [
        (mi.BoolType, env.bool),
        (mi.IntType, env.int),
        (mi.FloatType, env.float),
        (mi.VarTupleType, env.list),
    ]
    for kind_type, reader in readers:
        if isinstance(kind, kind_type):
            return reader(name)
    return env.str(name)


def _bare(kind: mi.Type) -> mi.Type:
    """The type itself, without the description and bounds around it."""
    return kind.type if isinstance(kind, mi.Metadata) else kind


def settings_from_mapping(values: dict[str, object]) -> Settings:
    """Validate raw values into Settings; errors name the environment variable at fault."""
    try:
        settings = msgspec.convert(values, Settings)
    except msgspec.ValidationError as exc:
        what, _, where = str(exc).partition(" - at `$.")
        raise ConfigError(f"{variable(where.split('`')[0].split('[')[0]) or 'configuration'}: {what}") from None
    for name, holds, why in RELATIONS:
        if not holds(settings):
            raise ConfigError(f"{name}: {why}")
    return settings
