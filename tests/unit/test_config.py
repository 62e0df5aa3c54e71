"""Configuration: environment variables, Kafka security options, secrets; the CLI's checks of it."""

import os
import re
import ssl
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError

from services.cli.commands import main
from services.config import (
    MAX_TOPIC_PARTITIONS,
    NOT_SETTINGS,
    SCOPED_ROLES,
    SETTING_PARTS,
    ApiToken,
    Settings,
    configuration_problem,
    env_name,
    parse_api_tokens,
    settings_help,
)
from services.kafka.client import client_options, topic_specs
from services.worker.batches import MAX_PARTITIONS
from tests.samples import sample


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


def test_the_policy_topic_is_configured_and_made_of_one_partition_kept_forever(monkeypatch):
    assert Settings().topic_policies == "policy-versions"
    monkeypatch.setenv("SLATRACK_TOPIC_POLICIES", "contracts")
    monkeypatch.setenv("SLATRACK_TOPIC_PARTITIONS", "12")
    settings = Settings()
    (spec,) = [s for s in topic_specs(settings) if s.name == "contracts"]
    assert spec.partitions == 1  # whatever SLATRACK_TOPIC_PARTITIONS says
    assert spec.configs == {"cleanup.policy": "delete", "retention.ms": "-1"}


def test_at_most_1024_partitions_for_the_topics_slatrack_creates(monkeypatch):
    """A record's position is offset x 1024 + partition: partition 1025 would be partition 1."""
    assert MAX_TOPIC_PARTITIONS == MAX_PARTITIONS  # the worker's bound, which config cannot import
    assert Settings(topic_partitions=1024).topic_partitions == 1024
    monkeypatch.setenv("SLATRACK_TOPIC_PARTITIONS", "1025")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert configuration_problem(raised.value) == (
        "SLATRACK_TOPIC_PARTITIONS: at most 1024 partitions: slatrack records an event's position as "
        "offset x 1024 + partition, so partition 1024 and above would share positions with the "
        "partitions below (a worker halts them)"
    )


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


# --- configuration checked before anything starts (issue 11, item 5) ------------------

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, **variables: str | None):
    """``slatrack ARGS`` in-process, with only these SLATRACK_ variables (the others unset)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("SLATRACK_")}
    return CliRunner().invoke(main, list(args), env=env | variables, catch_exceptions=False)


def one_line_error(result) -> str:
    """The single line a user's mistake gets: exit status 2, no traceback."""
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ")
    return line


@pytest.fixture
def events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(sample("ticket.opened")) + b"\n")
    return path


def test_unknown_variables_warn_naming_the_closest_setting(events_file):
    result = cli(
        "replay",
        "--events",
        str(events_file),
        SLATRACK_KAFKA_BOOTSTRAP_SERVERS="kafka:9092",
        SLATRACK_NONSENSE="1",
        # Not warned: the test suite's own, docker compose's (deploy/env.example), real settings.
        SLATRACK_TEST_KAFKA_BOOTSTRAP="127.0.0.1:1",
        SLATRACK_API_PORT="8000",
        SLATRACK_IMAGE_TAG="local",
        SLATRACK_MAX_EVENT_BYTES="65536",
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: SLATRACK_KAFKA_BOOTSTRAP_SERVERS is not a slatrack setting (ignored); "
        "did you mean SLATRACK_KAFKA_BOOTSTRAP?",
        "warning: SLATRACK_NONSENSE is not a slatrack setting (ignored)",
    ]


def test_an_invalid_value_is_one_line_naming_the_variable(events_file):
    line = one_line_error(cli("replay", "--events", str(events_file), SLATRACK_HTTP_PORT="abc"))
    assert line.startswith("Error: bad configuration: SLATRACK_HTTP_PORT: Input should be a valid integer")
    line = one_line_error(cli("replay", "--events", str(events_file), SLATRACK_LOG_LEVEL="LOUD"))
    assert "SLATRACK_LOG_LEVEL: Input should be 'DEBUG'" in line


@pytest.mark.parametrize(
    "url", ["mysql://slatrack:hunter2-secret@db/slatrack", "hunter2-secret", "sqlite://db/slatrack"]
)
def test_only_postgresql_and_sqlite_database_urls(events_file, url):
    line = one_line_error(cli("replay", "--events", str(events_file), SLATRACK_DATABASE_URL=url))
    assert line.startswith("Error: bad configuration: SLATRACK_DATABASE_URL: ")
    assert "use postgresql://USER@HOST:PORT/DATABASE" in line
    assert "hunter2-secret" not in line  # the URL may hold a password: never echoed
    if url.startswith("mysql"):
        assert "scheme 'mysql' is not supported" in line
    for good in ("postgresql://u@db:5432/x", "postgres://u@db/x", "sqlite:///data/x.db", "sqlite:////x.db"):
        url = Settings(database_url=good).database_url
        assert url is not None and url.get_secret_value() == good


def test_sqlite_url_names_the_file(tmp_path):
    from services.store import open_store, sqlite_path

    assert sqlite_path(Settings(database_url="sqlite:///rel/x.db")) == Path("rel/x.db")
    assert sqlite_path(Settings(database_url=f"sqlite:///{tmp_path}/x.db")) == tmp_path / "x.db"
    assert sqlite_path(Settings(database_url="postgresql://u@db/x")) is None
    open_store(Settings(database_url=f"sqlite:///{tmp_path}/models/x.db")).close()
    assert (tmp_path / "models" / "x.db").is_file()


def test_a_bad_policy_file_is_one_line_naming_it(events_file, tmp_path):
    invalid_toml = tmp_path / "broken.toml"
    invalid_toml.write_text("x = [\n")
    invalid_policy = tmp_path / "invalid.toml"
    invalid_policy.write_text('version = "x"\nsurprise = 1\n')
    cases = {
        tmp_path / "missing.toml": "cannot read the file: No such file or directory",
        tmp_path: "cannot read the file: Is a directory",  # unreadable as a file, whoever runs it
        invalid_toml: "not valid TOML",
        invalid_policy: "surprise: unknown key",
    }
    for path, problem in cases.items():
        args = ("explain", "T-1", "--events", str(events_file))
        line = one_line_error(cli(*args, SLATRACK_POLICY_FILE=str(path)))
        assert line.startswith(f"Error: SLATRACK_POLICY_FILE: {path}: invalid policy: "), line
        assert problem in line


def test_read_only_commands_create_no_read_models(events_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default data dir: ./data
    line = one_line_error(cli("explain", "T-1"))
    assert line == (
        "Error: SLATRACK_DATA_DIR: no read models at data/slatrack.db "
        "(`slatrack serve` or `slatrack rebuild` builds them)"
    )
    elsewhere = tmp_path / "elsewhere"
    one_line_error(cli("explain", "T-1", SLATRACK_DATABASE_URL=f"sqlite:///{elsewhere}/x.db"))
    assert cli("replay", "--events", str(events_file)).exit_code == 0
    assert cli("explain", "T-1", "--events", str(events_file)).exit_code == 0
    report = ("report", "--customer", "cust-1", "--month", "2026-10")
    assert one_line_error(cli(*report)) == line  # from the read models: none there, none made
    assert cli(*report, "--events", str(events_file)).exit_code == 0
    assert cli("calendar", "between", "2026-11-02T09:00:00Z", "2026-11-02T10:00:00Z").exit_code == 0
    assert not (tmp_path / "data").exists() and not elsewhere.exists()


def test_an_unwritable_data_dir_is_one_line(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    places = {a_file / "data": "cannot create", a_file: "it is a file"}
    if not os.access(read_only, os.W_OK):  # root writes anywhere: then the file cases only
        places[read_only / "data"] = "Permission denied"
        places[read_only] = "permission denied"
    for place, problem in places.items():
        for command in (["rebuild"], ["serve"]):  # both stop before they start anything
            line = one_line_error(cli(*command, SLATRACK_DATA_DIR=str(place), SLATRACK_HTTP_PORT="0"))
            assert line.startswith("Error: SLATRACK_DATA_DIR: ") and problem in line, line
            assert str(place) in line


def test_every_documented_variable_is_a_setting():
    deploy = [p for p in (REPO / "deploy").rglob("*") if p.is_file() and p.suffix in {".md", ".example"}]
    documents = [REPO / "README.md", REPO / "Dockerfile", REPO / "docker-compose.yml", *deploy]
    documents += [*(REPO / "docs").rglob("*.md"), *(REPO / "docs").rglob("*.yaml")]
    known = {env_name(name) for name in Settings.model_fields} | NOT_SETTINGS
    named: dict[str, Path] = {}
    for document in documents:
        for variable in re.findall(r"SLATRACK_[A-Z0-9_]*[A-Z0-9]", document.read_text(encoding="utf-8")):
            named.setdefault(variable, document.relative_to(REPO))
    assert "SLATRACK_KAFKA_BOOTSTRAP" in named  # the scan reads the documents
    stray = {v: str(d) for v, d in named.items() if v not in known and not v.startswith("SLATRACK_TEST")}
    assert stray == {}


def test_every_setting_is_in_one_part_and_serve_lists_them_all():
    names = [name for fields in SETTING_PARTS.values() for name in fields]
    assert sorted(names) == sorted(Settings.model_fields)
    help_text = cli("serve", "--help").stdout
    for name in Settings.model_fields:
        assert env_name(name) in help_text


def test_publish_help_says_where_it_finds_the_embedded_broker():
    help_text = " ".join(cli("publish", "--help").stdout.split())
    assert "With SLATRACK_KAFKA_BOOTSTRAP unset, the events go to the embedded broker" in help_text
    assert "127.0.0.1:SLATRACK_EMBEDDED_PORT" in help_text
    assert "SLATRACK_EMBEDDED_PORT (default: 9092)" in help_text
    # The data dir is what it is now: the read models and the embedded broker's output.
    data_dir = " ".join((Settings.model_fields["data_dir"].description or "").split())
    assert "slatrack.db" in data_dir and "embedded-broker.log" in data_dir


# --- API tokens limited to customers (issue 13) -------------------------------------------

SCOPED_SECRET = "scoped-s3cret-that-must-never-show"


def scoped(**entry: object) -> str:
    return orjson.dumps(
        [{"name": "acme-portal", "token": SCOPED_SECRET, "roles": ["reader"], **entry}]
    ).decode()


def test_a_token_may_be_limited_to_customers():
    [token] = parse_api_tokens(scoped(customers=["ACME", "GLOBEX", "ACME"]), "test")
    assert token.customers == frozenset({"ACME", "GLOBEX"})  # a repeated id is the same customer
    [unscoped] = parse_api_tokens(scoped(), "test")
    assert unscoped.customers is None  # no key: every customer, as before
    # Any id the event contract takes (up to 128 characters, spaces and non-ASCII included).
    odd = ["a", "x" * 128, "Société Générale", "cust 42", 'quote"s', "💡"]
    [token] = parse_api_tokens(scoped(customers=odd, roles=["reader", "publisher"]), "test")
    assert token.customers == frozenset(odd) and token.roles == {"reader", "publisher"}
    # From the environment as from a file.
    settings = Settings(api_tokens=SecretStr(scoped(customers=["ACME"], roles=["publisher"])))
    assert [(t.name, t.roles, t.customers) for t in settings.tokens] == [
        ("acme-portal", {"publisher"}, {"ACME"})
    ]
    assert SCOPED_SECRET not in repr(settings.tokens)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"customers": []}, "customers: give at least one customer id"),
        ({"customers": None}, "customers: a list of customer ids, or leave the key out"),
        ({"customers": "ACME"}, "customers: Input should be a valid list"),
        ({"customers": ["ACME", ""]}, "customers.1: String should have at least 1 character"),
        ({"customers": ["x" * 129]}, "customers.0: String should have at most 128 characters"),
        ({"customers": ["AC\nME"]}, "customers.0: a customer id holds no control characters"),
        ({"customers": ["AC\x00ME"]}, "customers.0: a customer id holds no control characters"),
        ({"customers": [42]}, "customers.0: Input should be a valid string"),
        ({"customers": [f"c{i}" for i in range(1001)]}, "customers: List should have at most 1000 items"),
        (
            {"customers": ["ACME"], "roles": ["admin"]},
            "roles: a token limited to customers may hold only the roles reader and publisher, not admin",
        ),
        (
            {"customers": ["ACME"], "roles": ["reader", "admin", "publisher"]},
            "may hold only the roles reader and publisher, not admin",
        ),
    ],
)
def test_a_bad_customer_list_is_refused_without_quoting_the_token(entry, message):
    with pytest.raises(ValueError, match=re.escape(message)) as direct:
        parse_api_tokens(scoped(**entry), "SLATRACK_API_TOKENS")
    assert str(direct.value).startswith("SLATRACK_API_TOKENS[0]: ")
    with pytest.raises(ValidationError) as raised:
        Settings(api_tokens=SecretStr(scoped(**entry)))
    problem = configuration_problem(raised.value)
    assert message in problem and problem.startswith("SLATRACK_API_TOKENS[0]: ")
    for shown in (str(direct.value), str(raised.value), repr(raised.value.errors()), problem):
        assert SCOPED_SECRET not in shown and "acme-portal" not in shown


def test_a_scoped_token_built_by_hand_is_held_to_the_same_rules():
    secret = SecretStr(SCOPED_SECRET)
    with pytest.raises(ValueError, match="empty customer list"):
        ApiToken("a", secret, frozenset({"reader"}), frozenset())
    with pytest.raises(ValueError, match="only the roles reader and publisher, not admin"):
        ApiToken("a", secret, frozenset({"reader", "admin"}), frozenset({"ACME"}))
    assert ApiToken("a", secret, frozenset({"admin"})).customers is None
    assert SCOPED_ROLES == ("reader", "publisher")


def test_a_bad_customer_list_is_one_line_naming_the_variable(events_file):
    bad = scoped(customers=["ACME"], roles=["admin"])
    line = one_line_error(cli("replay", "--events", str(events_file), SLATRACK_API_TOKENS=bad))
    assert line.startswith("Error: bad configuration: SLATRACK_API_TOKENS[0]: roles: a token limited")
    assert SCOPED_SECRET not in line
