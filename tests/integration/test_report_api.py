"""`GET /v1/customers/{id}/report` over real HTTP, on read models filled by the real projector
(SQLite and PostgreSQL): JSON, CSV (by the Accept header or ?format=csv), HTML, the errors and
the role; and `slatrack report` from the same read models. Each answer is the pure report
(projections.report) of the same events, byte for byte."""

import asyncio
import contextlib
import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from projections.policy import default_policy
from projections.report import monthly_report
from projections.report_render import COLUMNS, render
from services.cli.commands import main
from tests.engine_helpers import Story
from tests.feed import Feed
from tests.integration.live_api import LiveApi, auth, fresh_settings
from tests.unit.test_report import november
from tests.worker_helpers import throwaway_database

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

READER = auth("reader")
REPORT = "/v1/customers/acme/report"


class Served:
    def __init__(self, api: LiveApi, story: Story, data_dir, database_url: str | None):
        self.api = api
        self.client = api.client
        self.story = story
        self.data_dir = data_dir
        self.database_url = database_url

    def expected(self, form: str, customer: str = "acme", month: str = "2026-11") -> bytes:
        report = monthly_report(self.story.records, default_policy(), customer, month, datetime.now(UTC))
        return render(report, form)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request, kafka_bootstrap, tmp_path_factory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("report")
    overrides: dict[str, Any] = {"data_dir": data_dir}
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = stack.enter_context(
                throwaway_database(request.getfixturevalue("postgres_dsn"), "slatrack_report")
            )
            overrides["database_url"] = SecretStr(url)
        settings = fresh_settings(kafka_bootstrap, **overrides)
        api = LiveApi(settings, worker=False)
        try:
            story = november()
            # The events stored as a worker stores them (the projector, one partition, in order).
            feed = asyncio.run(Feed(api.store, datetime(2026, 12, 3, tzinfo=UTC)).open())
            asyncio.run(feed.send(*story.dicts))
            yield Served(api, story, data_dir, url)
        finally:
            api.close()


def test_the_report_as_json_is_the_pure_report(served):
    response = served.client.get(REPORT, params={"month": "2026-11"}, headers=READER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == served.expected("json")
    body = response.json()
    assert response.headers["x-slatrack-evaluated-at"] == body["as_of"] == "2026-12-01T05:00:00Z"
    assert body["complete"] is True and body["billing"]["total_cents"] == 43_750
    assert [t["ticket_id"] for t in body["tickets"]] == ["T-1", "T-2", "T-3", "T-4", "T-5"]
    # The stored views agree on what both show: T-3's charge, as its row has it (the row is as of
    # the projector's clock, after the month: the charge was final by then).
    billing = served.client.get(
        "/v1/customers/acme/billing", params={"month": "2026-11"}, headers=READER
    ).json()
    assert {line["ticket_id"]: line["amount_cents"] for line in billing["lines"]} == {
        line["ticket_id"]: line["amount_cents"] for line in body["billing"]["lines"]
    }
    # Asking for JSON explicitly, or for anything: JSON.
    for accept in ("application/json", "*/*", "image/png"):
        again = served.client.get(REPORT, params={"month": "2026-11"}, headers={**READER, "accept": accept})
        assert again.content == response.content, accept


@pytest.mark.parametrize(
    ("params", "accept"),
    [({"format": "csv"}, None), ({}, "text/csv"), ({}, "application/json;q=0.5, text/csv")],
)
def test_the_report_as_csv(served, params, accept):
    headers = {**READER, **({"accept": accept} if accept else {})}
    response = served.client.get(REPORT, params={"month": "2026-11", **params}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv; charset=utf-8")
    assert response.headers["content-disposition"] == 'attachment; filename="slatrack-report-2026-11.csv"'
    assert response.content == served.expected("csv")
    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    assert tuple(rows[0]) == COLUMNS
    [total] = [row for row in rows if row[0] == "billing_total"]
    assert int(total[COLUMNS.index("amount_cents")]) == 43_750


@pytest.mark.parametrize(("params", "accept"), [({"format": "html"}, None), ({}, "text/html,*/*;q=0.8")])
def test_the_report_as_a_printable_page(served, params, accept):
    headers = {**READER, **({"accept": accept} if accept else {})}
    response = served.client.get(REPORT, params={"month": "2026-11", **params}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert response.content == served.expected("html")
    assert b"http://" not in response.content and b"https://" not in response.content
    # ?format= wins over the Accept header.
    json_anyway = served.client.get(
        REPORT, params={"month": "2026-11", "format": "json"}, headers={**READER, "accept": "text/html"}
    )
    assert json_anyway.content == served.expected("json")


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "2026-11-01", "", "nov", "1969-12", "3000-01"])
def test_a_bad_month_is_422(served, month):
    response = served.client.get(REPORT, params={"month": month}, headers=READER)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["detail"].startswith("query.month: ")
    assert [e["loc"] for e in body["errors"]] == [["query", "month"]]
    missing = served.client.get(REPORT, headers=READER)
    assert missing.status_code == 422 and missing.json()["error"] == "invalid_request"
    bad_format = served.client.get(REPORT, params={"month": "2026-11", "format": "pdf"}, headers=READER)
    assert bad_format.status_code == 422 and bad_format.json()["errors"][0]["loc"] == ["query", "format"]


@pytest.mark.parametrize("customer", ["cust-nope", "c%00", "globe"])
def test_an_unknown_customer_is_the_404_of_the_customer_endpoint(served, customer):
    report = served.client.get(
        f"/v1/customers/{customer}/report", params={"month": "2026-11"}, headers=READER
    )
    customer_view = served.client.get(f"/v1/customers/{customer}", headers=READER)
    assert report.status_code == customer_view.status_code == 404
    assert report.json() == customer_view.json()
    assert report.json()["error"] == "not_found"


def test_another_customers_report_and_a_month_with_nothing(served):
    globex = served.client.get("/v1/customers/globex/report", params={"month": "2026-11"}, headers=READER)
    assert globex.status_code == 200 and globex.content == served.expected("json", "globex")
    assert [t["ticket_id"] for t in globex.json()["tickets"]] == ["T-1"]  # its own T-1
    empty = served.client.get(REPORT, params={"month": "2025-01"}, headers=READER)
    assert empty.status_code == 200 and empty.json()["tickets"] == []


def test_the_report_needs_the_reader_role(served):
    url = f"{REPORT}?month=2026-11"
    assert served.client.get(url).status_code == 401
    assert served.client.get(url, headers=auth("publisher")).status_code == 403
    assert served.client.get(url, headers=auth("admin")).status_code == 403
    assert served.client.get(url, headers=auth("all")).status_code == 200


def test_the_cli_reads_the_same_read_models_to_the_same_bytes(served):
    env = {
        "SLATRACK_DATA_DIR": str(served.data_dir),
        "SLATRACK_DATABASE_URL": served.database_url,
        "SLATRACK_POLICY_FILE": None,
    }
    for form in ("json", "csv"):
        result = CliRunner().invoke(
            main,
            ["report", "--customer", "acme", "--month", "2026-11", "--format", form],
            env=env,
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        api = served.client.get(REPORT, params={"month": "2026-11", "format": form}, headers=READER)
        assert result.stdout_bytes == api.content
    unknown = CliRunner().invoke(main, ["report", "--customer", "nobody", "--month", "2026-11"], env=env)
    assert unknown.exit_code == 1
    assert "unknown customer 'nobody': no event of it in the read models" in unknown.stderr


def test_the_openapi_documents_the_report(served):
    spec = served.client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/customers/{customer_id}/report"]["get"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"200", "401", "403", "404", "422", "503"} <= set(operation["responses"])
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv", "text/html"}
    assert {p["name"] for p in operation["parameters"]} == {"customer_id", "month", "format"}
    assert orjson.dumps(spec)
