"""The HTTP intake parses what it publishes: each event is validated from its own bytes, as a
worker validates a message of the log, and those bytes are what reaches the log. Over real
HTTP (the wire is the point of the keep-alive, timeout and disconnect tests), on the session
broker."""

import asyncio
import http.client
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from events import EventRejected, RejectKind, decode_event
from projections.policy import default_policy
from services import metrics
from services.api.app import create_app
from services.bootstrap import Services
from services.kafka.publisher import EventPublisher
from tests.integration.live_api import LiveApi, LogCapture, auth, fresh_settings
from tests.kafka_helpers import read_all
from tests.samples import sample

pytestmark = pytest.mark.broker

BODY_TIMEOUT_S = 1.0
PUBLISHER = auth("publisher") | {"content-type": "application/json"}


@pytest.fixture(scope="module")
def live(kafka_bootstrap, tmp_path_factory) -> Iterator[LiveApi]:
    settings = fresh_settings(
        kafka_bootstrap, data_dir=tmp_path_factory.mktemp("intake"), intake_body_timeout_s=BODY_TIMEOUT_S
    )
    api = LiveApi(settings, worker=False)
    try:
        yield api
    finally:
        api.close()


def requests_answered(code: str) -> float:
    return metrics.REGISTRY.get_sample_value("slatrack_intake_requests_total", {"code": code}) or 0.0


# -- one corpus, both paths ---------------------------------------------------------


def with_data(event_id: str, x: bytes) -> bytes:
    """A valid ticket.opened whose data has an unknown key ``x`` holding these bytes."""
    raw = orjson.dumps(sample("ticket.opened", event_id=event_id, data={"priority": "low", "x": 0}))
    return raw.replace(b'"x":0', b'"x":' + x)


def with_field(event_id: str, field: str, value: bytes) -> bytes:
    raw = orjson.dumps(sample("ticket.opened", event_id=event_id, **{field: "@"}))
    return raw.replace(f'"{field}":"@"'.encode(), f'"{field}":'.encode() + value)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


NOT_JSON, VERSION, INVALID, UNKNOWN = (
    RejectKind.INVALID_JSON,
    RejectKind.UNSUPPORTED_SCHEMA_VERSION,
    RejectKind.INVALID_EVENT,
    RejectKind.UNKNOWN_TYPE,
)


def corpus() -> list[tuple[bytes, RejectKind | None]]:
    """(input, expected: None for accepted, else the reason), each accepted one with an event id of
    its own."""
    n = iter(range(10_000))

    def eid() -> str:
        return f"corpus-{next(n)}"

    accepted = [
        orjson.dumps(sample("ticket.opened", event_id=eid())),
        orjson.dumps(sample("account.invoice_due", event_id=eid())),
        b'  {"event_id": "' + eid().encode() + b'", "type": "ticket.closed", "schema_version": 1,\n'
        b'   "occurred_at": "2026-10-30T15:30:00Z", "customer_id": "cust-1", "ticket_id": "T-1"}\n',
        with_data(eid(), b"18446744073709551615"),  # 2**64 - 1: the largest integer written back
        with_data(eid(), b"-9223372036854775808"),  # -2**63
        with_data(eid(), b"0.100000000000000000000000000000000001"),
        with_data(eid(), b"1.7976931348623157e308"),
        with_data(eid(), b"5e-324"),
        with_data(eid(), b"-0"),
        with_data(eid(), b"1E+2"),
        with_data(eid(), b'"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ ],{ caf\xc3\xa9"'),
        with_data(eid(), nested(50)),
        # Two keys alike: the last counts, on both paths.
        with_data(eid(), b'1, "x": 2'),
    ]
    rejected = [
        (b"", RejectKind.EMPTY),
        (b" \n", NOT_JSON),
        (b"{not json", NOT_JSON),
        (b'{"event_id": "a",}', NOT_JSON),
        (orjson.dumps(sample("ticket.opened", event_id=eid())) + b" x", NOT_JSON),
        (b"\xef\xbb\xbf" + orjson.dumps(sample("ticket.opened", event_id=eid())), NOT_JSON),
        (with_data(eid(), b'"\\ud800"'), NOT_JSON),
        (with_data(eid(), b'"\xff"'), NOT_JSON),
        (with_data(eid(), b'"tab\there"'), NOT_JSON),
        (with_data(eid(), b"01"), NOT_JSON),
        (b"null", INVALID),
        (b"42", INVALID),
        (b'"an event"', INVALID),
        (orjson.dumps(sample("ticket.opened", event_id=eid(), type="ticket.merged")), UNKNOWN),
        (orjson.dumps(sample("ticket.opened", event_id=eid(), extra=1)), INVALID),
        (
            orjson.dumps(
                sample("ticket.opened", event_id=eid(), data={"priority": "low", "pad": "x" * 70_000})
            ),
            RejectKind.TOO_LARGE,
        ),
        # Equal to 1 in Python, but not the JSON integer 1.
        (with_field(eid(), "schema_version", b"true"), VERSION),
        (with_field(eid(), "schema_version", b"1.0"), VERSION),
        (with_field(eid(), "schema_version", b"1e0"), VERSION),
        (with_field(eid(), "schema_version", b'"1"'), VERSION),
        (with_field(eid(), "schema_version", b"2"), VERSION),
        # Integers beyond 64 bits: JSON, but not written back (every digest of the ticket raised).
        (with_data(eid(), b"1111111111111111111111111111111111111111"), INVALID),  # 40 digits
        (with_data(eid(), b"-98765432109876543210987654321098765432109876543210"), INVALID),
        (with_data(eid(), b"18446744073709551616"), INVALID),  # 2**64
        # Not JSON numbers, wherever they are.
        (with_data(eid(), b"NaN"), NOT_JSON),
        (with_data(eid(), b"Infinity"), NOT_JSON),
        (with_data(eid(), b"-Infinity"), NOT_JSON),
        (with_data(eid(), b"1e400"), NOT_JSON),
        (with_data(eid(), b'{"deep": [1, {"er": -1e309}]}'), NOT_JSON),
        (with_field(eid(), "schema_version", b"NaN"), NOT_JSON),
        (with_field(eid(), "occurred_at", b"Infinity"), NOT_JSON),
        # Nested deeper than the contract's parser goes (orjson's encoder stopped at 255).
        *[(with_data(eid(), nested(depth)), NOT_JSON) for depth in (254, 255, 500, 1000, 1100)],
    ]
    cases: list[tuple[bytes, RejectKind | None]] = [(raw, None) for raw in accepted]
    return cases + rejected


def kafka_outcome(raw: bytes) -> RejectKind | None:
    try:
        decode_event(raw)
    except EventRejected as rejection:
        return rejection.kind
    return None


def http_outcome(client: httpx.Client, body: bytes, codes: list[int]) -> RejectKind | None:
    response = client.post("/v1/events", content=body, headers=PUBLISHER)
    codes.append(response.status_code)
    if response.status_code == 202:
        return None
    assert response.status_code in (413, 422), response.text
    answer = response.json()
    return RejectKind(answer["errors"][0]["kind"] if "errors" in answer else answer["error"])


async def test_both_paths_accept_and_reject_the_same_inputs_and_the_log_gets_the_bytes_sent(live):
    cases = corpus()
    before = {code: requests_answered(code) for code in ("202", "422", "500")}
    outcomes: list[
        tuple[bytes, RejectKind | None, RejectKind | None, RejectKind | None, RejectKind | None]
    ] = []
    codes: list[int] = []
    for raw, expected in cases:
        single = http_outcome(live.client, raw, codes)
        # The same item in an array; an empty item would be no item at all.
        wrapped = http_outcome(live.client, b"[" + raw + b"]", codes) if raw.strip() else single
        outcomes.append((raw[:80], expected, kafka_outcome(raw), single, wrapped))
    assert [o for o in outcomes if o[1:] != (o[1],) * 4] == []
    # Every request was counted with its code.
    for code in before:
        assert requests_answered(code) - before[code] == codes.count(int(code))
    accepted = [raw for raw, expected in cases if expected is None]

    # What was validated is what was sent: the body as it came, an array's item as it stood.
    records = await read_all(live.settings, live.settings.topic_events, 2 * len(accepted))
    assert sorted(r.value for r in records) == sorted(
        [raw for raw in accepted] + [raw.strip() for raw in accepted]
    )
    assert {r.key for r in records} == {b"cust-1"}


def test_deep_nesting_is_a_422_on_the_same_connection(live):
    port = int(live.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for depth in (254, 1000):
            connection.request("POST", "/v1/events", body=with_data("deep", nested(depth)), headers=PUBLISHER)
            if depth == 254:
                kept = connection.sock
            response = connection.getresponse()
            answer = orjson.loads(response.read())
            assert response.status == 422, answer
            assert answer["error"] == "invalid_json" and "recursion limit" in answer["detail"]
        # Kept alive: the second answer came on the first request's connection.
        assert connection.sock is kept and response.getheader("connection") != "close"
    finally:
        connection.close()


async def test_an_unexpected_error_is_a_500_and_counted(kafka_settings):
    # A publisher that never connected: faststream refuses to send (not a broker error).
    app = create_app(Services(kafka_settings, default_policy(), EventPublisher(kafka_settings)))
    before = requests_answered("500")
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        response = await client.post("/v1/events", content=orjson.dumps(sample("ticket.opened")))
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert requests_answered("500") == before + 1


# -- the wire: a body that never completes, a client that leaves ------------------------


def raw_request(live: LiveApi, head: str, body: bytes) -> socket.socket:
    port = int(live.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT_S + 5)
    token = auth("publisher")["authorization"]
    sock.sendall(f"{head}\r\nHost: intake\r\nAuthorization: {token}\r\n".encode() + b"\r\n" + body)
    return sock


def test_a_body_that_never_completes_is_a_408_within_the_timeout(live):
    before = requests_answered("408")
    started = time.monotonic()
    sock = raw_request(live, "POST /v1/events HTTP/1.1\r\nContent-Length: 1000", b'{"event_id"')
    try:
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error":"request_timeout"' in answer and b"SLATRACK_INTAKE_BODY_TIMEOUT_S" in answer
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 3
    assert requests_answered("408") == before + 1


async def test_a_client_that_leaves_mid_body_is_a_log_line_not_a_traceback(live):
    before = requests_answered("499")
    with LogCapture().installed() as logs:
        sock = raw_request(live, "POST /v1/events HTTP/1.1\r\nContent-Length: 1000", b'{"event_id"')
        await asyncio.sleep(0.2)  # the request reached the intake, which waits for the body
        sock.close()
        deadline = time.monotonic() + 10
        while requests_answered("499") == before and "ClientDisconnect" not in logs.text:
            assert time.monotonic() < deadline, logs.text
            await asyncio.sleep(0.05)
    assert "Traceback" not in logs.text and " ERROR " not in logs.text, logs.text
    assert "intake: the client disconnected after 11 bytes of the body; nothing was sent" in logs.text
    assert requests_answered("499") == before + 1


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(live):
    for method, path in (("POST", "/v1/events/"), ("GET", "/healthz/"), ("GET", "/v1/tickets/")):
        response = live.client.request(method, path, headers=PUBLISHER | {"host": "attacker.example"})
        assert response.status_code == 404, (path, response.status_code, response.headers)
        assert "location" not in response.headers
        assert response.json()["error"] == "not_found"
