"""docker-compose.yml, validated by Debian's docker-compose (no Docker engine
needed) and read for what the stack promises: order, health checks, secrets from
the environment, and settings and commands that slatrack really has."""

import os
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from services.cli.commands import main as slatrack_cli
from services.config import ENV_PREFIX, Settings
from tests.deploy.helpers import (
    COMPOSE_FILE,
    DASHBOARDS,
    ENV_EXAMPLE,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    ROOT,
    load_yaml,
    tool,
)

SECRETS = ("POSTGRES_PASSWORD", "SLATRACK_API_TOKENS", "GRAFANA_ADMIN_PASSWORD")
SLATRACK_SERVICES = ("kafka-init", "worker", "api")  # the services that run the slatrack image


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    # Only PATH and HOME from our environment: neither a developer's exported
    # secrets nor a .env file beside the compose file may change the outcome.
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        [tool("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with deploy/env.example."""
    resolved = compose(ENV_EXAMPLE, "config")
    assert resolved.returncode == 0, resolved.stderr
    return yaml.safe_load(resolved.stdout)


def test_compose_file_is_valid():
    checked = compose(ENV_EXAMPLE, "config", "-q")
    assert checked.returncode == 0, checked.stderr


def test_secrets_have_no_defaults(tmp_path):
    """Without the secrets in the environment, compose refuses to start anything."""
    example = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for secret in SECRETS:
        without = tmp_path / f"without-{secret}.env"
        without.write_text("\n".join(line for line in example if not line.startswith(f"{secret}=")))
        checked = compose(without, "config", "-q")
        assert checked.returncode != 0, f"compose starts without {secret}"
        assert f"set {secret}" in checked.stderr, checked.stderr


def test_the_services(stack):
    services = stack["services"]
    assert set(services) == {"kafka", "kafka-init", "postgres", "worker", "api", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["postgres"]["image"].startswith("postgres:")
    # Two workers in one consumer group, and one API instance.
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["serve", "--role", "worker"]
    assert services["api"]["command"] == ["serve", "--role", "api"]
    assert services["api"].get("deploy", {}).get("replicas", 1) == 1
    assert services["kafka-init"]["restart"] == "no"


def test_it_comes_up_in_order(stack):
    services = stack["services"]

    def needs(service: str) -> dict[str, str]:
        return {name: dep["condition"] for name, dep in services[service].get("depends_on", {}).items()}

    assert needs("kafka-init") == {"kafka": "service_healthy"}
    for service in ("worker", "api"):
        assert needs(service) == {
            "kafka-init": "service_completed_successfully",
            "postgres": "service_healthy",
        }
    assert needs("prometheus") == {"worker": "service_started", "api": "service_started"}
    assert needs("grafana") == {"prometheus": "service_healthy"}
    # Every service something waits on to be healthy has a health check; the slatrack
    # services have the image's (Dockerfile HEALTHCHECK).
    for name, service in services.items():
        if name in SLATRACK_SERVICES:
            continue
        assert service["healthcheck"]["test"], name
        assert not service["healthcheck"].get("disable"), name


def host_ip(port: str | dict[str, Any]) -> str | None:
    """The host address of a published port, in docker-compose v1's short form or v2's long one."""
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = port.split(":")
    return parts[0] if len(parts) == 3 else None


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """target -> source of a service's bind mounts (short or long form)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume["type"] == "bind":
                mounts[volume["target"]] = Path(volume["source"])
        else:
            source, target = volume.split(":")[:2]
            if source.startswith("/"):
                mounts[target] = Path(source)
    return mounts


def test_published_ports_are_on_loopback(stack):
    published = [
        (name, port) for name, service in stack["services"].items() for port in service.get("ports", [])
    ]
    assert {name for name, _ in published} == {"kafka", "api", "prometheus", "grafana"}
    for name, port in published:
        assert host_ip(port) == "127.0.0.1", (name, port)


def test_slatrack_services_share_settings_that_exist(stack):
    """Every SLATRACK_* variable is a real setting (a typo would be silently ignored),
    the values make valid settings (the example tokens included), and the topic
    creator and the workers agree on the topics."""
    environments = {name: stack["services"][name]["environment"] for name in SLATRACK_SERVICES}
    for name, environment in environments.items():
        ours = {
            k.removeprefix(ENV_PREFIX).lower(): v for k, v in environment.items() if k.startswith(ENV_PREFIX)
        }
        unknown = set(ours) - set(Settings.model_fields)
        assert not unknown, f"{name}: no such settings: {sorted(unknown)}"
        settings = Settings(**ours)
        assert settings.kafka_bootstrap == "kafka:9092"
        assert settings.tokens, name
        assert environment["PGPASSWORD"] and "@" in environment["SLATRACK_DATABASE_URL"]
    assert environments["kafka-init"]["SLATRACK_KAFKA_CREATE_TOPICS"] == "true"
    for name in ("worker", "api"):
        assert environments[name]["SLATRACK_KAFKA_CREATE_TOPICS"] == "false"
        for key, value in environments["kafka-init"].items():
            if key.startswith(("SLATRACK_TOPIC_", "SLATRACK_SIGNALS_")):
                assert environments[name][key] == value, (name, key)


def parse_command_line(args: list[str]) -> None:
    """Parse a `slatrack` command line as the CLI would, without running it."""
    command: click.Command = slatrack_cli
    ctx = click.Context(command, info_name="slatrack")
    words, name = list(args), "slatrack"
    while isinstance(command, click.Group):
        assert words and not words[0].startswith("-"), f"{args}: no subcommand"
        name = words.pop(0)
        found = command.get_command(ctx, name)
        assert found is not None, f"{args}: `{ctx.command_path}` has no command {name!r}"
        command = found
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(name, words, parent=ctx)  # raises on an unknown option or a bad value


def test_the_commands_exist(stack):
    for name in SLATRACK_SERVICES:
        parse_command_line(stack["services"][name]["command"])
    with pytest.raises(click.UsageError):
        parse_command_line(["serve", "--role", "everything"])
    with pytest.raises(AssertionError):
        parse_command_line(["no-such-command"])


def test_prometheus_and_grafana_see_their_files(stack):
    services = stack["services"]
    prometheus = bind_mounts(services["prometheus"])
    assert prometheus["/etc/prometheus"] == PROMETHEUS_DIR
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert PROMETHEUS_CONFIG.parent == PROMETHEUS_DIR
    # The scrape jobs find the slatrack services by their compose names, on the image's port.
    discovered = {
        (name, sd["port"])
        for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert discovered == {("worker", 8000), ("api", 8000)}

    grafana = bind_mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == GRAFANA_DIR / "provisioning"
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "slatrack.yml")["providers"]
    assert grafana[providers[0]["options"]["path"]] == GRAFANA_DIR / "dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert GRAFANA_DIR / "dashboards" / Path(home).name in DASHBOARDS
    assert Path(home).parent == Path(providers[0]["options"]["path"])
