"""Configuration from ``SLATRACK_*`` environment variables (pydantic-settings).

Every setting has a sane default for a developer machine; ``slatrack serve
--help`` lists them all with their descriptions.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SLATRACK_"

Role = Literal["reader", "publisher", "admin"]
ROLES: tuple[Role, ...] = ("reader", "publisher", "admin")
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token of the HTTP API and the roles it grants (roles do not imply one another).

    The token is a :class:`SecretStr`: it shows as ``'**********'`` in a repr or a log line.
    """

    name: str
    token: SecretStr
    roles: frozenset[Role]


class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    token: Annotated[SecretStr, Field(min_length=MIN_TOKEN_CHARS, max_length=512)]
    roles: Annotated[list[Role], Field(min_length=1)]


def parse_api_tokens(text: str, source: str) -> list[ApiToken]:
    """``[{"name", "token", "roles"}]`` from JSON text; errors never quote the text (it holds secrets)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        # The position only: the message of a JSON error may quote the document.
        raise ValueError(f"{source} is not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
    if not isinstance(document, list):
        raise ValueError(f'{source} must be a JSON array of {{"name", "token", "roles"}} objects')
    tokens: list[ApiToken] = []
    for index, item in enumerate(document):
        try:
            entry = _TokenEntry.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(_problem(error) for error in exc.errors())
            raise ValueError(f"{source}[{index}]: {problems}") from None
        tokens.append(ApiToken(entry.name, entry.token, frozenset(entry.roles)))
    return tokens


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "entry"
    if where == "token" and error["type"] == "too_short":
        return f"token: must be at least {MIN_TOKEN_CHARS} characters"
    if where == "token" and error["type"] == "too_long":
        return "token: must be at most 512 characters"
    return f"{where}: {error['msg']}"


class Settings(BaseSettings):
    # hide_input_in_errors: a configuration error never echoes a value (tokens, passwords, URLs).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    # --- Kafka -----------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers (host:port,...). Unset: `serve` starts the embedded "
        "broker and the other commands use it.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol; production brokers want SSL or SASL_SSL."
    )
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, required with SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_client_id: str = Field("slatrack", description="Client id reported to the brokers.")
    kafka_group_id: str = Field("slatrack", description="Consumer group of the workers.")
    kafka_enable_idempotence: bool = Field(
        False,
        description="Idempotent producer. Recommended on Apache Kafka; the embedded broker cannot do it.",
    )
    kafka_create_topics: bool = Field(True, description="Create missing topics at start-up.")
    kafka_request_timeout_ms: int = Field(30_000, ge=5_000, description="Kafka client request timeout.")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=3_000, description="Consumer session timeout: how soon a dead worker's partitions move."
    )
    consumer_max_records: int = Field(500, ge=1, le=100_000, description="Records per consumer batch.")

    # --- Topics ----------------------------------------------------------
    topic_events: str = Field("ticket-events", description="The event log: the single source of truth.")
    topic_dlq: str = Field("ticket-events.dlq", description="Where messages that fail validation go.")
    topic_signals: str = Field("sla-signals", description="Where SLA signals go (key = customer_id).")
    signals_retention_ms: int = Field(
        30 * 24 * 3600 * 1000, ge=-1, description="Retention of the signals topic (-1: forever)."
    )
    topic_partitions: int = Field(6, ge=1, description="Partitions of topics slatrack creates.")
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of topics slatrack creates."
    )

    # --- SLA -------------------------------------------------------------
    policy_file: Path | None = Field(
        None, description="The SLA policy file (TOML). Unset: the packaged default policy."
    )

    # --- Events ----------------------------------------------------------
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted event, in bytes.")

    # --- HTTP ------------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: any free port).")

    intake_body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="POST /v1/events answers 408 when the request body has not all arrived within "
        "this many seconds of the request.",
    )

    api_store_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="The API's limit on each read-model call (PostgreSQL, enforced on the client side, "
        "so it holds against a frozen server): past it a query answers 503 store_timeout and /metrics "
        "leaves out slatrack_sla_clocks.",
    )

    # --- HTTP API access ---------------------------------------------------
    api_tokens: SecretStr | None = Field(
        None,
        description='Bearer tokens of the HTTP API, as JSON: [{"name": "ops", "token": "...", '
        '"roles": ["reader"]}] (roles: reader, publisher, admin; tokens of at least 16 characters; never '
        "logged). Unset, with no SLATRACK_API_TOKENS_FILE either: the API is open, and `serve` listens "
        "only on a loopback address unless given --insecure.",
    )
    api_tokens_file: Path | None = Field(
        None, description="A file holding the same JSON as SLATRACK_API_TOKENS (both may be given)."
    )
    cursor_key: SecretStr | None = Field(
        None,
        min_length=16,
        description="Key that signs the cursors of GET /v1/tickets (HMAC-SHA256), so that an altered or "
        "foreign cursor is a 400; give every API replica behind one address the same key (never "
        "logged). Unset: a random key per process, so a cursor holds on the process that gave it, "
        "until it restarts.",
    )
    metrics_public: bool = Field(
        True, description="/metrics, /healthz and /readyz need no token. false: they need the reader role."
    )
    ready_max_lag: int = Field(
        1000,
        ge=0,
        description="/readyz answers 503 while the worker of this process has more unprocessed events "
        "than this in any partition.",
    )

    # --- Embedded broker -------------------------------------------------
    embedded_port: int = Field(
        9092, ge=0, le=65535, description="Port of the embedded broker (0: any free port)."
    )
    data_dir: Path = Field(
        Path("data"), description="Local state: embedded broker log, later the read models."
    )

    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL of the read models (postgresql://user@host:5432/db), shared by "
        "workers and API replicas. Unset: SQLite in SLATRACK_DATA_DIR.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")

    @model_validator(mode="after")
    def _api_tokens_are_valid(self) -> "Settings":
        self.tokens  # noqa: B018 - reads and checks them: a bad token file fails at start, not later
        return self

    @property
    def tokens(self) -> list[ApiToken]:
        """The API tokens of SLATRACK_API_TOKENS and SLATRACK_API_TOKENS_FILE (read at each call)."""
        tokens: list[ApiToken] = []
        if self.api_tokens is not None and self.api_tokens.get_secret_value().strip():
            tokens += parse_api_tokens(self.api_tokens.get_secret_value(), f"{ENV_PREFIX}API_TOKENS")
        if self.api_tokens_file is not None:
            try:
                text = self.api_tokens_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{ENV_PREFIX}API_TOKENS_FILE: cannot read {self.api_tokens_file}: {type(exc).__name__}"
                ) from None
            tokens += parse_api_tokens(text, str(self.api_tokens_file))
        names = [t.name for t in tokens]
        if len(set(names)) != len(names):
            raise ValueError("API token names must be unique")
        secrets = [t.token.get_secret_value() for t in tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("API tokens must be distinct")
        return tokens

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> "Settings":
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                name
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                names = ", ".join(ENV_PREFIX + m.upper() for m in missing)
                raise ValueError(f"{self.kafka_security_protocol} needs {names}")
        return self

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    def bootstrap(self) -> str:
        """Where Kafka is: the configured cluster, or the embedded broker's address."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_port}"


def settings_help() -> str:
    """One line per environment variable, for ``--help``."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else default
        lines.append(f"{ENV_PREFIX}{name.upper()} (default: {shown})\n    {field.description}")
    return "\n".join(lines)
