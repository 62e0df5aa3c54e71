"""Schemathesis against our own OpenAPI document, over real HTTP, with a token that has
every role: whatever it sends, in or out of the schema, never gets a server error, and
the answers are the ones documented."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import hypothesis.strategies as st
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.dev.simulator import Helpdesk
from tests.integration.live_api import LiveApi, auth, fresh_settings, keyed
from tests.kafka_helpers import produce

pytestmark = pytest.mark.broker

EXAMPLES = 80  # per operation and mode: the whole run stays well under a minute


@pytest.fixture(scope="module")
def live(kafka_bootstrap, tmp_path_factory) -> Iterator[LiveApi]:
    settings = fresh_settings(kafka_bootstrap, data_dir=tmp_path_factory.mktemp("schemathesis"))
    desk = Helpdesk(seed=3, customers=5, start=datetime(2026, 11, 1, tzinfo=UTC), days=15)
    events = list(desk.history(20))
    api = LiveApi(settings)
    try:
        asyncio.run(produce(settings, keyed(events)))
        api.start_worker()
        api.wait_applied(len(events))
        yield api
    finally:
        api.close()


@pytest.fixture(scope="module")
def api_schema(live: LiveApi):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    page = live.client.get("/v1/tickets", params={"limit": 3}, headers=auth("reader")).json()
    tickets = [item["view"]["ticket_id"] for item in page["items"]]
    customers = sorted({item["view"]["customer_id"] for item in page["items"]})
    customer_page = live.client.get("/v1/customers", params={"limit": 2}, headers=auth("reader")).json()

    # Random ids are unknown (404): mix in known ones, so that the views, as_of
    # recomputation, timelines and billing answer too.
    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        choices = [path_parameters]
        if path_parameters is None:
            return st.just(None)
        if "ticket_id" in path_parameters:
            choices += [{**path_parameters, "ticket_id": t} for t in tickets]
        if "customer_id" in path_parameters:
            choices += [{**path_parameters, "customer_id": c} for c in customers]
        return st.sampled_from(choices)

    @schema.hook
    def flatmap_query(context, query):
        choices = [query]
        if query is not None and "as_of" in query:
            choices += [{**query, "as_of": t} for t in ("2026-11-10T12:00:00-05:00", "2026-11-20T00:00:00Z")]
        if query is not None and "cursor" in query:
            choices.append({**query, "cursor": page["next_cursor"]})
            choices.append({**query, "cursor": customer_page["next_cursor"]})  # each list's own
        return st.sampled_from(choices)

    return schema


OPERATIONS = [
    ("POST", "/v1/events"),
    ("GET", "/v1/tickets"),
    ("GET", "/v1/tickets/{ticket_id}"),
    ("GET", "/v1/tickets/{ticket_id}/timeline"),
    ("GET", "/v1/customers"),
    ("GET", "/v1/customers/{customer_id}"),
    ("GET", "/v1/customers/{customer_id}/billing"),
    ("GET", "/v1/customers/{customer_id}/report"),
    ("GET", "/v1/admin/rebuild"),
    ("POST", "/v1/admin/rebuild"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
# Not positive_data_acceptance nor negative_data_rejection: the schema cannot say that an
# as_of matching the pattern must also be a real date in the past, nor which cursors exist
# (422 for schema-valid input), and extra query parameters are ignored, not refused.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# Operations that take no parameter have no invalid input to generate.
NEGATIVE = [op for op in OPERATIONS if op[1].startswith("/v1/") and op != ("GET", "/v1/admin/rebuild")]
CASES = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (*op, GenerationMode.NEGATIVE) for op in NEGATIVE
]


# (schemathesis.pytest.from_fixture does not run under pytest 9; the strategies it builds do.)
@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # schemathesis' own
@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_the_api_against_its_openapi(api_schema, method, path, mode):
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        derandomize=True,
        database=None,
    )
    def run(case):
        response = case.call_and_validate(headers=auth("all"), timeout=30, checks=CHECKS)
        statuses.append(response.status_code)

    run()
    assert statuses
    if mode == GenerationMode.POSITIVE and method == "GET":
        assert 200 in statuses, statuses  # the known ids were used: not only 404s and 422s


def test_the_document_names_every_operation(live):
    spec = live.client.get("/openapi.json").json()
    assert orjson.dumps(spec)  # JSON all through
    assert len([op for ops in spec["paths"].values() for op in ops]) == 13
