"""Access control: tokens from the configuration (never shown), roles, constant-time
comparison, public or protected operations, readiness, and `slatrack serve` refusing
an open API off loopback."""

import dataclasses
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import httpx
import orjson
import pytest
from pydantic import SecretStr, ValidationError

from services.api.auth import Authenticator
from services.api.state import services
from services.config import Settings, parse_api_tokens, settings_help
from services.kafka.embedded import free_port
from services.serve import exposure_problem, is_loopback
from services.worker.ports import ReadModelStore, StoreUnavailable
from tests.integration.live_api import TOKENS, TOKENS_JSON, LiveApi, LogCapture, auth, fresh_settings, keyed
from tests.kafka_helpers import produce
from tests.samples import sample

SLATRACK = Path(sys.executable).parent / "slatrack"
SECRET = "s3cret-token-that-must-never-show"


# -- configuration -----------------------------------------------------------------


def test_tokens_from_the_environment_and_a_file(monkeypatch, tmp_path):
    file = tmp_path / "tokens.json"
    file.write_text(json.dumps([{"name": "ci", "token": "f" * 32, "roles": ["publisher"]}]))
    monkeypatch.setenv(
        "SLATRACK_API_TOKENS", json.dumps([{"name": "ops", "token": SECRET, "roles": ["reader"]}])
    )
    monkeypatch.setenv("SLATRACK_API_TOKENS_FILE", str(file))
    settings = Settings()
    assert [(t.name, set(t.roles)) for t in settings.tokens] == [("ops", {"reader"}), ("ci", {"publisher"})]
    assert settings.tokens[0].token.get_secret_value() == SECRET
    for shown in (repr(settings), str(settings), str(settings.model_dump()), repr(settings.tokens)):
        assert SECRET not in shown and "f" * 32 not in shown
    assert "SLATRACK_API_TOKENS" in settings_help() and "SLATRACK_READY_MAX_LAG" in settings_help()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([{"name": "ops", "token": "short-" + "x", "roles": ["reader"]}], "at least 16 characters"),
        ([{"name": "ops", "token": SECRET, "roles": []}], "roles"),
        ([{"name": "ops", "token": SECRET, "roles": ["root"]}], "roles.0"),
        ([{"name": "ops", "token": SECRET}], "roles"),
        ([{"name": "o p s", "token": SECRET, "roles": ["reader"]}], "name"),
        ([{"name": "ops", "token": SECRET, "roles": ["reader"], "extra": SECRET}], "extra"),
        ({"name": "ops", "token": SECRET, "roles": ["reader"]}, "JSON array"),
        (
            [
                {"name": "a", "token": SECRET, "roles": ["reader"]},
                {"name": "a", "token": "y" * 20, "roles": ["admin"]},
            ],
            "unique",
        ),
        (
            [
                {"name": "a", "token": SECRET, "roles": ["reader"]},
                {"name": "b", "token": SECRET, "roles": ["admin"]},
            ],
            "distinct",
        ),
    ],
)
def test_bad_token_configuration_is_refused_without_echoing_it(document, message):
    with pytest.raises(ValidationError) as error:
        Settings(api_tokens=SecretStr(json.dumps(document)))
    assert message in str(error.value)
    assert SECRET not in str(error.value) and SECRET not in repr(error.value.errors())


def test_a_token_file_that_is_not_json_is_refused_without_echoing_it(tmp_path):
    file = tmp_path / "tokens.json"
    file.write_text(f'[{{"name": "ops", "token": "{SECRET}", roles: }}]')
    with pytest.raises(ValidationError) as error:
        Settings(api_tokens_file=file)
    assert "not valid JSON" in str(error.value) and SECRET not in str(error.value)
    with pytest.raises(ValidationError, match="cannot read"):
        Settings(api_tokens_file=tmp_path / "missing.json")


def test_every_token_is_compared_every_time(monkeypatch):
    tokens = parse_api_tokens(
        json.dumps(
            [{"name": f"t{i}", "token": f"token-number-{i:04d}-xxxx", "roles": ["reader"]} for i in range(5)]
        ),
        "test",
    )
    authenticator = Authenticator(tokens)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented, name in [
        ("token-number-0000-xxxx", "t0"),
        ("token-number-0004-xxxx", "t4"),
        ("nope", None),
        ("", None),
    ]:
        calls.clear()
        found = authenticator.identify(presented)
        assert (found.name if found else None) == name
        assert len(calls) == 5  # no early exit, whichever matched
        assert {len(a) for a, _ in calls} == {32}  # digests: equal lengths, whatever was presented
    assert "token-number" not in repr(authenticator)


def test_exposure_rules():
    open_settings = Settings(http_host="0.0.0.0")
    assert "refusing to serve an open API on 0.0.0.0" in (exposure_problem(open_settings, "all", False) or "")
    assert "--insecure" in (exposure_problem(open_settings, "api", False) or "")
    assert exposure_problem(open_settings, "all", True) is None
    assert exposure_problem(open_settings, "worker", False) is None  # no HTTP
    guarded = Settings(http_host="0.0.0.0", api_tokens=SecretStr(TOKENS_JSON))
    assert exposure_problem(guarded, "all", False) is None
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
        assert exposure_problem(Settings(http_host=host), "all", False) is None
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org", "", "localhost.example.org"):
        assert not is_loopback(host), host


# -- served: roles on the operations, readiness ------------------------------------


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_protected_operations_when_metrics_are_not_public(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path, metrics_public=False)
    api = LiveApi(settings)
    try:
        api.start_worker()
        for path in ("/metrics", "/healthz", "/readyz"):
            response = api.client.get(path)
            assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "unauthorized"
            assert api.client.get(path, headers=auth("publisher")).status_code == 403
            assert api.client.get(path, headers=auth("admin")).status_code == 403
            assert api.client.get(path, headers=auth("reader")).status_code in (200, 503)
        assert api.client.get("/healthz", headers=auth("reader")).json() == {"status": "ok"}
        spec = api.client.get("/openapi.json").json()
        for path in ("/metrics", "/healthz", "/readyz"):
            assert spec["paths"][path]["get"]["security"] == [{"bearerAuth": []}]
            assert "401" in spec["paths"][path]["get"]["responses"]
        assert api.client.get("/docs").status_code == 200  # the documentation stays readable
    finally:
        api.close()


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_with_no_token_everything_is_open(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path, api_tokens=None)
    api = LiveApi(settings)
    try:
        api.start_worker()
        event = sample("ticket.opened", event_id="open-1", customer_id="cust-open", ticket_id="T-open")
        assert api.client.post("/v1/events", content=orjson.dumps(event)).status_code == 202
        api.wait_applied(1)
        assert api.client.get("/v1/tickets/T-open").status_code == 200
        assert api.client.get("/v1/tickets").json()["items"][0]["view"]["ticket_id"] == "T-open"
        assert api.client.get("/v1/admin/rebuild").json()["status"] == "idle"
        # A token is not needed, and a wrong one is not held against the caller either.
        assert (
            api.client.get("/v1/tickets/T-open", headers={"authorization": "Bearer whatever"}).status_code
            == 200
        )
    finally:
        api.close()


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_readyz_goes_from_503_to_200(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path, ready_max_lag=0)
    api = LiveApi(settings)
    try:
        # The store has no generation yet: not ready, and why.
        response = api.client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "not_ready" and "no active generation" in body["detail"]
        assert body["reasons"] == [
            "no read models yet: no active generation",
            "the worker has not been assigned partitions yet",
        ]
        assert api.client.get("/v1/tickets", headers=auth("reader")).json()["error"] == "no_read_models"
        assert api.client.get("/healthz").status_code == 200  # alive all the same

        events = [
            sample(
                "ticket.opened", event_id=f"ready-{i}", customer_id=f"cust-{i % 7}", ticket_id=f"T-ready-{i}"
            )
            for i in range(300)
        ]
        import asyncio

        asyncio.run(produce(settings, keyed(events)))
        api.start_worker()
        seen: list[tuple[int, str]] = []
        deadline = time.monotonic() + 60
        while True:
            response = api.client.get("/readyz")
            seen.append((response.status_code, response.text))
            if response.status_code == 200:
                break
            assert time.monotonic() < deadline, seen[-1]
            time.sleep(0.05)
        assert api.projector.applied_events == len(events)  # bound 0: ready once all is processed
        reasons = {
            reason for status, text in seen if status == 503 for reason in orjson.loads(text)["reasons"]
        }
        assert "no read models yet: no active generation" not in reasons  # the worker made one
        body = response.json()
        assert body["status"] == "ready" and body["generation"] == api.store.active_generation()
        assert body["lag"] and set(body["lag"].values()) == {0}

        # What the worker's lag can say.
        wired = services(api.app)
        api.app.state.services = dataclasses.replace(wired, lag=lambda: {0: 0, 1: 5000, 2: None})
        body = api.client.get("/readyz").json()
        assert body["error"] == "not_ready" and len(body["reasons"]) == 2
        assert "not known yet in partitions [2]" in body["detail"]
        assert (
            "behind by more than 0 events (SLATRACK_READY_MAX_LAG) in partitions [1]: up to 5000"
            in body["detail"]
        )
        assert body["lag"] == {"0": 0, "1": 5000, "2": None}
        api.app.state.services = wired
        assert api.client.get("/readyz").status_code == 200

        # A store that cannot be reached: not ready, and queries are 503 (never 500).
        class Unreachable:
            def __getattr__(self, name):
                def fail(*args, **kwargs):
                    raise StoreUnavailable("PostgreSQL: connection refused")

                return fail

        api.app.state.services = dataclasses.replace(wired, store=cast(ReadModelStore, Unreachable()))
        try:
            response = api.client.get("/readyz")
            assert response.status_code == 503
            assert "cannot be reached (StoreUnavailable)" in response.json()["detail"]
            response = api.client.get("/v1/tickets/T-ready-1", headers=auth("reader"))
            assert response.status_code == 503 and response.json()["error"] == "store_unavailable"
        finally:
            api.app.state.services = wired
        assert api.client.get("/readyz").status_code == 200
    finally:
        api.close()


# -- `slatrack serve` ----------------------------------------------------------------


def serve_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], int]:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_HTTP_PORT": str(http_port),
        "SLATRACK_EMBEDDED_PORT": str(free_port()),
        "SLATRACK_DATA_DIR": str(tmp_path / "data"),
        "SLATRACK_KAFKA_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }
    return env, http_port


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serve_refuses_an_open_api_off_loopback(tmp_path, host):
    env, _ = serve_env(tmp_path, SLATRACK_HTTP_HOST=host)
    started = time.monotonic()
    result = subprocess.run([str(SLATRACK), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert f"refusing to serve an open API on {host}" in result.stderr
    assert "SLATRACK_API_TOKENS" in result.stderr and "--insecure" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "data").exists()  # it started nothing


def test_serve_refuses_a_bad_token_configuration_without_echoing_it(tmp_path):
    bad = json.dumps([{"name": "ops", "token": SECRET, "roles": ["superuser"]}])
    env, _ = serve_env(tmp_path, SLATRACK_API_TOKENS=bad)
    result = subprocess.run([str(SLATRACK), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "bad configuration" in result.stderr and "roles.0" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def wait_healthy(
    process: subprocess.Popen, url: str, log: Path, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"serve exited: {log.read_text()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve did not answer: {log.read_text()}"
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(30)


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_serve_insecure_serves_an_open_api_and_says_so(tmp_path):
    env, port = serve_env(tmp_path, SLATRACK_HTTP_HOST="0.0.0.0")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(SLATRACK), "serve", "--insecure"], env=env, stdout=out, stderr=out)
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}", log)
        assert "NO TOKEN CONFIGURED AND --insecure" in log.read_text()
    finally:
        assert stop(process) == 0


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_serve_with_tokens(tmp_path):
    """The real `serve`: roles enforced, the worker's lag in /readyz, no token in its log."""
    env, port = serve_env(tmp_path, SLATRACK_API_TOKENS=TOKENS_JSON, SLATRACK_LOG_LEVEL="DEBUG")
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(SLATRACK), "serve"], env=env, stdout=out, stderr=out)
    try:
        wait_healthy(process, url, log)
        with httpx.Client(base_url=url, timeout=30) as client:
            event = sample("ticket.opened", event_id="serve-auth-1", customer_id="cust-s", ticket_id="T-s")
            body = orjson.dumps(event)
            assert client.post("/v1/events", content=body).status_code == 401
            assert client.post("/v1/events", content=body, headers=auth("reader")).status_code == 403
            assert client.post("/v1/events", content=body, headers=auth("publisher")).status_code == 202
            deadline = time.monotonic() + 30
            while (response := client.get("/v1/tickets/T-s", headers=auth("reader"))).status_code != 200:
                assert response.status_code in (404, 503), response.text
                assert time.monotonic() < deadline, response.text
                time.sleep(0.2)
            assert client.get("/v1/tickets/T-s").status_code == 401
            assert (
                client.get(
                    "/v1/tickets/T-s", headers={"authorization": "Bearer not-a-known-token"}
                ).status_code
                == 401
            )
            deadline = time.monotonic() + 30
            while (ready := client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.2)
            assert ready.json()["lag"], ready.json()  # the worker's lag, passed by serve
        assert stop(process) == 0
        text = log.read_text()
        assert "api: 4 bearer tokens: ops-reader (reader), helpdesk (publisher), oncall (admin)" in text
        for token in TOKENS.values():
            assert token not in text
        assert "not-a-known-token" not in text
    finally:
        stop(process)


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_failed_attempts_log_no_token(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path)
    with LogCapture().installed() as logs:
        api = LiveApi(settings, worker=False)
        try:
            for headers in (
                {"authorization": f"Bearer {SECRET}"},
                {"authorization": f"Basic {SECRET}"},
                {"authorization": SECRET},
                auth("publisher"),
                auth("reader"),
                auth("admin"),
            ):
                for path in ("/v1/tickets", "/v1/admin/rebuild", "/v1/tickets/x?as_of=bad"):
                    api.client.get(path, headers=headers)
                api.client.post("/v1/events", content=b"{}", headers=headers)
        finally:
            api.close()
    assert any("/v1/tickets" in line for line in logs.lines)
    for secret in (SECRET, *TOKENS.values()):
        assert secret not in logs.text
