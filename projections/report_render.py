"""The monthly report as bytes: JSON, CSV (RFC 4180) and a printable HTML page.

String formatting only (no I/O, no clock), so the API and the CLI write the same bytes for the
same report: ``GET /v1/customers/{id}/report`` and ``slatrack report`` both call these.

- JSON: the document's fields in declaration order (projections.report.MonthlyReport),
  indented by two spaces, a final newline.
- CSV: one table, a header row then one row per item, every line ended by CRLF, fields quoted
  when they hold a comma, a quote or a line break (Python's csv module, RFC 4180). The first
  column, ``section``, says what a row is (filter on it in a spreadsheet); each item's fields
  go in the columns of the same name, the others are empty. Section ``report`` holds the
  report's own fields as ``key``/``value`` rows. Numbers are the JSON's, as integers; instants
  UTC; booleans ``true``/``false``; null an empty field. A text beginning with ``=``, ``+``,
  ``-``, ``@``, a tab or a carriage return (an id from upstream) gets a leading ``'``, so that
  a spreadsheet shows it rather than evaluating it as a formula (OWASP, CSV injection).
- HTML: one self-contained page (inline CSS, no script, no external reference), every value
  escaped with :func:`html.escape`, each instant in the report's time zone beside UTC.
"""

import csv
import html
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from projections.report import MonthlyReport
from projections.views import View

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv; charset=utf-8; header=present"
HTML_TYPE = "text/html; charset=utf-8"
FORMATS = ("json", "csv", "html")


def render(report: MonthlyReport, form: str) -> bytes:
    """The report in ``form`` (one of :data:`FORMATS`)."""
    if form == "json":
        return render_json(report)
    if form == "csv":
        return render_csv(report)
    if form == "html":
        return render_html(report)
    raise ValueError(f"unknown format {form!r}: expected one of {', '.join(FORMATS)}")


MEDIA_TYPES = {"json": JSON_TYPE, "csv": CSV_TYPE, "html": HTML_TYPE}


# -- JSON -------------------------------------------------------------------------------


def render_json(report: MonthlyReport) -> bytes:
    return orjson.dumps(report.document(), option=orjson.OPT_INDENT_2) + b"\n"


# -- CSV --------------------------------------------------------------------------------

# Every column, in order: the sections' fields share them by name.
COLUMNS = (
    "section",
    "ticket_id",
    "clock",
    "priority",
    "cycle",
    "level",
    "category",
    "state",
    "status",
    "opened_at",
    "contract",
    "policy_version",
    "digest",
    "effective_from",
    "in_place_of",
    "evaluated",
    "met",
    "attainment",
    "attainment_percent",
    "breached_at",
    "target_seconds",
    "elapsed_seconds",
    "overrun_seconds",
    "tickets_at_level",
    "tickets_reached",
    "reached_at",
    "cause",
    "rule",
    "billing_status",
    "billable_seconds",
    "amount_cents",
    "response",
    "resolution",
    "error",
    "event_id",
    "key",
    "value",
)
# The report's own fields, as key/value rows of section "report".
REPORT_KEYS = (
    "customer_id",
    "month",
    "time_zone",
    "period_start",
    "period_end",
    "as_of",
    "as_of_basis",
    "complete",
    "digest",
)


def csv_sections(report: MonthlyReport) -> list[tuple[str, list[View]]]:
    """(section, items) in the order the CSV lists them."""
    billing = report.billing
    return [
        ("contract_version", list(report.contract_versions)),
        ("ticket", list(report.tickets)),
        ("attainment", list(report.attainment)),
        ("breach", list(report.breaches)),
        ("escalation_level", list(report.escalations.by_level)),
        ("escalated_ticket", list(report.escalations.tickets)),
        ("billing_line", list(billing.lines)),
        ("open_at_end", list(report.open_at_end)),
        ("quarantined", list(report.quarantined)),
    ]


def csv_rows(report: MonthlyReport) -> list[dict[str, Any]]:
    """The CSV's rows as dicts (column -> JSON value), header excepted."""
    document = report.document()
    rows: list[dict[str, Any]] = [{"section": "report", "key": k, "value": document[k]} for k in REPORT_KEYS]
    rows += [{"section": "report", "key": k, "value": v} for k, v in document["digest_inputs"].items()]
    rows += [
        {"section": "report", "key": f"reproduce_{k}", "value": v} for k, v in document["reproduce"].items()
    ]
    for section, items in csv_sections(report):
        rows += [{"section": section, **item.document()} for item in items]
    billing = report.billing
    rows.append(
        {
            "section": "billing_total",
            "billable_seconds": billing.total_billable_seconds,
            "amount_cents": billing.total_cents,
        }
    )
    for row in rows:
        unknown = set(row) - set(COLUMNS)
        if unknown:  # a field added to the document must be given its column
            raise ValueError(f"no CSV column for {sorted(unknown)} (section {row['section']})")
    return rows


def render_csv(report: MonthlyReport) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180: CRLF, quotes doubled
    writer.writerow(COLUMNS)
    for row in csv_rows(report):
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return out.getvalue().encode("utf-8")


# A text cell a spreadsheet would take for a formula (OWASP "CSV injection"): these reports go
# to customers, and an id comes from an upstream helpdesk.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value  # shown as the text it is, never evaluated
    return str(value)


# -- HTML -------------------------------------------------------------------------------

_CSS = """
body { font: 10.5pt/1.4 system-ui, sans-serif; color: #111; margin: 2em; }
h1 { font-size: 1.5em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 1.6em 0 .4em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: .3em 0 1em; }
th, td { border: 1px solid #bbb; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.utc { color: #555; font-size: .9em; }
.provisional { border: 2px solid #b00; padding: .3em .6em; display: inline-block; }
.none { color: #555; font-style: italic; }
code { font-size: .95em; word-break: break-all; }
@media print { body { margin: 0; } h2 { break-after: avoid; } tr { break-inside: avoid; } }
"""


def render_html(report: MonthlyReport) -> bytes:
    zone = ZoneInfo(report.time_zone)
    e = _escape

    def when(instant: str | None) -> str:
        if instant is None:
            return '<span class="none">from the beginning</span>'
        moment = datetime.strptime(instant, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        local = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        return f'{e(local)} <span class="utc">({e(instant)})</span>'

    title = f"SLA report {report.month}, customer {report.customer_id}"
    state = (
        "<p>The month is over: every ticket is evaluated as of its end.</p>"
        if report.complete
        else '<p class="provisional">Provisional: the month was not over when this report was computed '
        f"(as of the customer's {e(report.as_of_basis.replace('_', ' '))}).</p>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>SLA report {e(report.month)}</h1>",
        f"<p>Customer <strong>{e(report.customer_id)}</strong></p>",
        state,
        _table(
            ["", ""],
            [
                ["Period", f"{when(report.period_start)} to {when(report.period_end)}"],
                ["Time zone", e(report.time_zone)],
                ["As of", when(report.as_of)],
                ["Digest", f"<code>{e(report.digest)}</code>"],
                [
                    "Computed from",
                    f"{e(report.digest_inputs.ticket_events)} ticket events, "
                    f"{e(report.digest_inputs.account_events)} account events, contracts "
                    f"<code>{e(report.digest_inputs.contracts_digest)}</code>",
                ],
            ],
            header=False,
        ),
        "<h2>Contract versions in force</h2>",
        _table(
            ["contract", "policy version", "in force from", "digest", "in place of"],
            [
                [
                    e(v.contract),
                    e(v.policy_version),
                    when(v.effective_from),
                    f"<code>{e(v.digest)}</code>",
                    e(v.in_place_of or ""),
                ]
                for v in report.contract_versions
            ],
        ),
        "<h2>Attainment of the targets</h2>",
        "<p>A target is evaluated once its clock stopped or it breached; met unless it breached. "
        "Percentages are rounded half up to two decimals.</p>",
        _table(
            ["clock", "priority", "evaluated", "met", "attainment", "%"],
            [
                [
                    e(a.clock),
                    e(a.priority),
                    _n(a.evaluated),
                    _n(a.met),
                    _n(a.attainment or "–"),
                    _n(a.attainment_percent or "–"),
                ]
                for a in report.attainment
            ],
        ),
        "<h2>Breaches</h2>",
        _table(
            [
                "ticket",
                "clock",
                "cycle",
                "priority",
                "breached at",
                "target (s)",
                "elapsed (s)",
                "overrun (s)",
            ],
            [
                [
                    e(b.ticket_id),
                    e(b.clock),
                    _n(b.cycle),
                    e(b.priority),
                    when(b.breached_at),
                    _n(b.target_seconds),
                    _n(b.elapsed_seconds),
                    _n(b.overrun_seconds) + f' <span class="utc">({e(_duration(b.overrun_seconds))})</span>',
                ]
                for b in report.breaches
            ],
        ),
        "<h2>Escalations</h2>",
        _table(
            ["level", "tickets at this level", "tickets that reached it"],
            [
                [_n(c.level), _n(c.tickets_at_level), _n(c.tickets_reached)]
                for c in report.escalations.by_level
            ],
        ),
        _table(
            ["ticket", "level reached", "reached at", "cause"],
            [
                [e(t.ticket_id), _n(t.level), when(t.reached_at), e(t.cause)]
                for t in report.escalations.tickets
            ],
        ),
        "<h2>Billing</h2>",
        _table(
            ["ticket", "rule", "status", "billable (s)", "cents", "contract", "policy version"],
            [
                [
                    e(line.ticket_id),
                    e(line.rule),
                    e(line.billing_status),
                    _n(line.billable_seconds),
                    _n(line.amount_cents),
                    e(line.contract),
                    e(line.policy_version),
                ]
                for line in report.billing.lines
            ]
            + [
                [
                    "<strong>total</strong>",
                    "",
                    "",
                    _n(report.billing.total_billable_seconds),
                    f'<td class="n"><strong>{e(report.billing.total_cents)}</strong>',
                    "",
                    "",
                ]
            ],
        ),
        "<h2>Still open at the report's instant</h2>",
        _table(
            ["ticket", "priority", "status", "opened at", "response", "resolution", "level"],
            [
                [
                    e(t.ticket_id),
                    e(t.priority),
                    e(t.status),
                    when(t.opened_at),
                    e(t.response),
                    e(t.resolution),
                    _n(t.level),
                ]
                for t in report.open_at_end
            ],
        ),
        "<h2>Tickets of the month</h2>",
        _table(
            ["ticket", "priority", "category", "opened at", "state", "level", "contract", "policy version"],
            [
                [
                    e(t.ticket_id),
                    e(t.priority or ""),
                    e(t.category or ""),
                    when(t.opened_at),
                    e(t.state),
                    _n("" if t.level is None else t.level),
                    e(t.contract),
                    e(t.policy_version),
                ]
                for t in report.tickets
            ],
        ),
    ]
    if report.quarantined:
        parts += [
            "<h2>Quarantined tickets (left out of every number)</h2>",
            _table(
                ["ticket", "error", "last event"],
                [[e(q.ticket_id), e(q.error), e(q.event_id or "")] for q in report.quarantined],
            ),
        ]
    parts += [
        "<h2>Verifying this report</h2>",
        "<p>Export your log and compute the report again: the digest and every number must be the same.</p>",
        f"<pre><code>{e(report.reproduce.export)}\n{e(report.reproduce.report)}</code></pre>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts).encode("utf-8")


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: object) -> str:
    """A number's cell (right-aligned)."""
    return f'<td class="n">{_escape(value)}'


def _table(headers: list[str], rows: Iterable[list[str]], header: bool = True) -> str:
    """A table of cells already escaped; a cell that starts with ``<td`` is a whole cell."""
    body = ["<table>"]
    if header:
        body.append("<tr>" + "".join(f"<th>{_escape(h)}</th>" for h in headers) + "</tr>")
    count = 0
    for row in rows:
        count += 1
        cells = [cell if cell.startswith("<td") else f"<td>{cell}" for cell in row]
        body.append("<tr>" + "".join(f"{cell}</td>" for cell in cells) + "</tr>")
    if not count:
        body.append(f'<tr><td class="none" colspan="{len(headers)}">none</td></tr>')
    body.append("</table>")
    return "\n".join(body)


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s"
