"""Configuration from ``SLATRACK_*`` environment variables (pydantic-settings).

Every setting has a sane default for a developer machine; ``slatrack serve
--help`` lists them all with their descriptions, and each command's ``--help``
the ones it reads (:data:`SETTING_PARTS`).
"""

import difflib
import json
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SLATRACK_"
# services.worker.batches.MAX_PARTITIONS (a record's position in the read models is
# offset x 1024 + partition), which this module cannot import; a unit test checks they agree.
MAX_TOPIC_PARTITIONS = 1024

# The roles a token of the HTTP API grants (services.api.auth).
Role = Literal["reader", "publisher", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
# What one `slatrack serve` process runs (`--role`): the worker and the HTTP API, or one of them.
ProcessRole = Literal["all", "worker", "api"]
PROCESS_ROLES: tuple[ProcessRole, ...] = get_args(ProcessRole)
MIN_TOKEN_CHARS = 16
# The roles a token limited to customers may hold: reading and publishing their data. Admin
# (the rebuild), and everything that is about the whole service, are for unscoped tokens.
SCOPED_ROLES: tuple[Role, ...] = ("reader", "publisher")
# A customer id as the event contract has it (events.models.Id, which config cannot import):
# 1 to 128 characters, no control character.
CUSTOMER_ID_PATTERN = r"^[^\x00-\x1f\x7f]*$"
MAX_CUSTOMER_ID = 128
MAX_TOKEN_CUSTOMERS = 1000


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token of the HTTP API and the roles it grants (roles do not imply one another).

    The token is a :class:`SecretStr`: it shows as ``'**********'`` in a repr or a log line.
    ``customers``: None for a token that sees every customer; else the only customers whose
    data it reads and publishes (never empty; then ``roles`` are within :data:`SCOPED_ROLES`).
    """

    name: str
    token: SecretStr
    roles: frozenset[Role]
    customers: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.customers is not None:
            if not self.customers:
                raise ValueError(f"API token {self.name!r}: an empty customer list would see nothing")
            if not self.roles <= set(SCOPED_ROLES):
                raise ValueError(_scoped_roles_problem(self.roles))


CustomerIdText = Annotated[str, Field(min_length=1, max_length=MAX_CUSTOMER_ID, pattern=CUSTOMER_ID_PATTERN)]


class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    token: Annotated[SecretStr, Field(min_length=MIN_TOKEN_CHARS, max_length=512)]
    roles: Annotated[list[Role], Field(min_length=1)]
    # Absent: every customer. Given: a list of 1 or more customer ids (null is refused, not
    # read as "every customer": a scope must never widen by a typo of a template).
    customers: Annotated[list[CustomerIdText], Field(min_length=1, max_length=MAX_TOKEN_CUSTOMERS)] | None = (
        None
    )

    @model_validator(mode="before")
    @classmethod
    def _customers_not_null(cls, data: Any) -> Any:
        if isinstance(data, dict) and "customers" in data and data["customers"] is None:
            raise ValueError(
                "customers: a list of customer ids, or leave the key out for a token that sees every customer"
            )
        return data

    @model_validator(mode="after")
    def _scoped_roles(self) -> "_TokenEntry":
        if self.customers is not None and not set(self.roles) <= set(SCOPED_ROLES):
            raise ValueError(_scoped_roles_problem(frozenset(self.roles)))
        return self


def _scoped_roles_problem(roles: frozenset[Role]) -> str:
    others = ", ".join(sorted(set(roles) - set(SCOPED_ROLES)))
    return (
        f"roles: a token limited to customers may hold only the roles {' and '.join(SCOPED_ROLES)}, "
        f"not {others} (the admin operations and /metrics are about every customer)"
    )


def parse_api_tokens(text: str, source: str) -> list[ApiToken]:
    """``[{"name", "token", "roles", "customers"?}]`` from JSON text; errors never quote the text (it
    holds secrets)."""
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
        customers = frozenset(entry.customers) if entry.customers is not None else None
        tokens.append(ApiToken(entry.name, entry.token, frozenset(entry.roles), customers))
    return tokens


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "entry"
    if where == "entry" and error["type"] == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if where == "customers" and error["type"] == "too_short":
        return "customers: give at least one customer id (or leave the key out for every customer)"
    if where.startswith("customers.") and error["type"] == "string_pattern_mismatch":
        return f"{where}: a customer id holds no control characters"
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
    kafka_request_timeout_ms: int = Field(
        30_000,
        ge=5_000,
        description="Kafka client request timeout; also how long `publish`, `export` and `serve` (with "
        "SLATRACK_KAFKA_BOOTSTRAP set) wait at start for the broker to answer.",
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=3_000, description="Consumer session timeout: how soon a dead worker's partitions move."
    )
    consumer_max_records: int = Field(500, ge=1, le=100_000, description="Records per consumer batch.")
    rebuild_batch_records: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="Records per batch of `slatrack rebuild` (one transaction each; fewer batches, "
        "fewer stories of each ticket told).",
    )
    rebuild_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes `slatrack rebuild` projects and checks the log with, each its own "
        "partitions (0: as many as cores; never more than the partitions; 1: in the rebuild's own).",
    )

    # --- Topics ----------------------------------------------------------
    topic_events: str = Field("ticket-events", description="The event log: the single source of truth.")
    topic_dlq: str = Field("ticket-events.dlq", description="Where messages that fail validation go.")
    topic_signals: str = Field("sla-signals", description="Where SLA signals go (key = customer_id).")
    topic_policies: str = Field(
        "policy-versions",
        description="The policy topic: every published version of every contract's policy (one "
        "partition, kept forever, key = the contract); read in full by every reader of the log.",
    )
    policy_poll_s: float = Field(
        5.0, gt=0, le=3600, description="How often a worker reads the policy topic for new versions."
    )
    signals_retention_ms: int = Field(
        30 * 24 * 3600 * 1000, ge=-1, description="Retention of the signals topic (-1: forever)."
    )
    topic_partitions: int = Field(
        6,
        ge=1,
        description=f"Partitions of topics slatrack creates (at most {MAX_TOPIC_PARTITIONS}: a worker "
        "projects no partition beyond).",
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of topics slatrack creates."
    )

    # --- SLA -------------------------------------------------------------
    policy_file: Path | None = Field(
        None, description="The SLA policy file (TOML). Unset: the packaged default policy."
    )

    # --- Events ----------------------------------------------------------
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted event, in bytes.")
    dlq_max_message_bytes: int = Field(
        1_000_000,
        ge=64 * 1024,
        description="Largest dead letter, headers included (at most the dead-letter topic's "
        "max.message.bytes): a larger one is cut to fit, saying so in its headers.",
    )
    dlq_send_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a dead letter may take to be acknowledged before its partition halts "
        "(and is tried again): the other partitions go on.",
    )

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
        'logged). "customers": ["ACME", ...] limits a token to those customers\' data (roles reader '
        "and publisher only). Unset, with no SLATRACK_API_TOKENS_FILE either: the API is open, and "
        "`serve` listens only on a loopback address unless given --insecure.",
    )
    api_tokens_file: Path | None = Field(
        None, description="A file holding the same JSON as SLATRACK_API_TOKENS (both may be given)."
    )
    api_clock_skew_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How far in the future an as_of may be (a client's clock ahead of ours): such an "
        "as_of is taken as now; further ahead it is a 422.",
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
    ready_stall_s: float = Field(
        60.0,
        gt=0,
        description="/readyz answers 503 when a partition of this worker has records to project and made "
        "no progress for this many seconds.",
    )
    stop_timeout_s: float = Field(
        20.0,
        gt=0,
        description="After SIGTERM, how long serve lets the batch in hand and the HTTP requests finish "
        "before it abandons them (nothing committed is lost).",
    )

    # --- Embedded broker -------------------------------------------------
    embedded_port: int = Field(
        9092,
        ge=0,
        le=65535,
        description="Port of the embedded broker on 127.0.0.1 (0: any free port). With "
        "SLATRACK_KAFKA_BOOTSTRAP unset, the other commands (publish, export, ...) look for a running "
        "`slatrack serve`'s broker there.",
    )
    data_dir: Path = Field(
        Path("data"),
        description="Local state: the SQLite read models (slatrack.db, unless SLATRACK_DATABASE_URL is "
        "set) and the embedded broker's output (embedded-broker.log; its events are kept in memory only).",
    )

    database_url: SecretStr | None = Field(
        None,
        description="URL of the read models (never logged): postgresql://user@host:5432/db (or "
        "postgres://), shared by workers and API replicas; or sqlite:///PATH (sqlite:////ABSOLUTE/PATH). "
        "Unset: SQLite in SLATRACK_DATA_DIR.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")

    @field_validator("topic_partitions")
    @classmethod
    def _partitions_have_positions(cls, count: int) -> int:
        if count > MAX_TOPIC_PARTITIONS:
            raise ValueError(
                f"at most {MAX_TOPIC_PARTITIONS} partitions: slatrack records an event's position as "
                f"offset x {MAX_TOPIC_PARTITIONS} + partition, so partition {MAX_TOPIC_PARTITIONS} and "
                "above would share positions with the partitions below (a worker halts them)"
            )
        return count

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            database_scheme(url.get_secret_value())  # raises ValueError: not a scheme we open
        return url

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


# --- the database URL ----------------------------------------------------------

DATABASE_SCHEMES: dict[str, Literal["postgresql", "sqlite"]] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DATABASE_URL_FORMS = (
    "use postgresql://USER@HOST:PORT/DATABASE (or postgres://) or sqlite:///PATH; "
    f"unset, the read models are SQLite in {ENV_PREFIX}DATA_DIR"
)


def database_scheme(url: str) -> Literal["postgresql", "sqlite"]:
    """Which store a database URL names; ValueError for any other (the URL is never quoted: it may
    hold a password; only a scheme is)."""
    found = _SCHEME.match(url)
    if found is None:
        raise ValueError(f"not a URL: {_DATABASE_URL_FORMS}")
    scheme = DATABASE_SCHEMES.get(found.group(1).lower())
    if scheme is None:
        raise ValueError(f"scheme {found.group(1)!r} is not supported: {_DATABASE_URL_FORMS}")
    if scheme == "sqlite" and not url[found.end() :].startswith("/"):
        raise ValueError(f"a SQLite URL names a file, not a host: {_DATABASE_URL_FORMS}")
    return scheme


def sqlite_url_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL: relative after three slashes, absolute after four."""
    return Path(url.split(":///", 1)[1])


# --- which command reads what ------------------------------------------------------

# Every setting belongs to one part; a command's --help lists the parts it reads (a test runs the
# commands and checks that each setting they read is listed, and that each setting has a part).
SETTING_PARTS: dict[str, tuple[str, ...]] = {
    "broker": (
        "kafka_bootstrap",
        "embedded_port",
        "kafka_security_protocol",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_client_id",
        "kafka_request_timeout_ms",
    ),
    "producer": ("kafka_enable_idempotence",),
    "group": ("kafka_group_id", "kafka_session_timeout_ms"),
    "batches": ("consumer_max_records",),
    "rebuild": ("rebuild_processes", "rebuild_batch_records"),
    "worker": ("policy_poll_s",),
    # The log: the events, and the policy versions they are measured with.
    "log": ("topic_events", "topic_policies"),
    # The other topics, and how slatrack creates them all (publish, demo, serve, topics create).
    "topics": (
        "topic_dlq",
        "topic_signals",
        "signals_retention_ms",
        "topic_partitions",
        "topic_replication_factor",
    ),
    "create": ("kafka_create_topics",),
    "events": ("max_event_bytes",),
    "dlq": ("dlq_max_message_bytes", "dlq_send_timeout_s"),
    "policy": ("policy_file",),
    "store": ("data_dir", "database_url"),
    "http": (
        "http_host",
        "http_port",
        "api_tokens",
        "api_tokens_file",
        "metrics_public",
        "ready_max_lag",
        "ready_stall_s",
        "intake_body_timeout_s",
        "api_store_timeout_s",
        "api_clock_skew_s",
        "cursor_key",
    ),
    "stop": ("stop_timeout_s",),
    "logging": ("log_level",),
}


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def settings_help(*parts: str) -> str:
    """Each environment variable of these parts (default: all of them), its default and meaning,
    in the order of :class:`Settings`, for ``--help``."""
    wanted = {name for part in parts for name in SETTING_PARTS[part]} if parts else set(Settings.model_fields)
    lines = []
    for name, field in Settings.model_fields.items():
        if name in wanted:
            lines.append(
                f"{env_name(name)} (default: {_shown(field.default)})\n{_wrapped(field.description)}"
            )
    return "\n".join(lines)


def _wrapped(text: str | None) -> str:
    # Never inside a name or a value (they carry hyphens: ticket-events.dlq).
    indent = " " * 4
    return textwrap.fill(
        text or "", 80, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()  # as the variable is written
    return str(default)


# --- variables slatrack does not know ------------------------------------------------

# SLATRACK_ variables that are not settings of slatrack but are documented or used
# beside it: docker compose's (deploy/env.example) and the test suite's.
NOT_SETTINGS = frozenset({"SLATRACK_API_PORT", "SLATRACK_IMAGE_TAG"})
TEST_PREFIX = "SLATRACK_TEST_"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``SLATRACK_*`` variable that is no setting (it would be ignored), naming
    the closest setting when one is close. Names are compared in capitals: pydantic-settings reads
    them case-insensitively."""
    known = [env_name(name) for name in Settings.model_fields]
    warnings = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith(ENV_PREFIX) or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(TEST_PREFIX):
            continue
        warnings.append(f"{variable} is not a slatrack setting (ignored){_did_you_mean(name, known)}")
    return warnings


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    # Compared without the prefix that every name shares, or everything would look close.
    suffixes = {k.removeprefix(ENV_PREFIX): k for k in known}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(suffixes), n=1, cutoff=0.6)
    return f"; did you mean {suffixes[close[0]]}?" if close else ""


def configuration_problem(exc: ValidationError) -> str:
    """A settings error as one line naming each variable, the value never shown."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in error["loc"])
        problems.append(f"{env_name(where)}: {message}" if where in Settings.model_fields else message)
    return "; ".join(problems).replace("\n", " ")
