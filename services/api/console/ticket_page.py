"""The ticket page, ``/ui/customers/{customer_id}/tickets/{ticket_id}`` (issue 15, "a ticket").

Everything on it comes from the ticket's audit trail (:func:`projections.explain.explain`, the
document ``GET /v1/tickets/{id}/timeline`` serves, computed over the same stored events with the
generation's contracts): the picture of its clocks (:mod:`.clock_picture`, drawn by
:mod:`.clock_svg`), every event with its effects, the billing computation line by line, the
contract, policy version and digest, and the commands that recompute it all from an export.

The ticket is found as the API finds it (:func:`services.worker.histories.find_ticket` among the
principal's customers): another customer's ticket is the same 404 page as one that does not exist
(:func:`services.api.scope.no_ticket`'s rule).

``as_of``: RFC 3339 with an offset (``2026-11-09T15:00:00Z``), or a local wall time without one
(``2026-11-09T10:00`` or with seconds, what the page's ``datetime-local`` input sends), read in
the policy's time zone (the explain document's ``time_zone``; a time seen twice when the clocks
go back is its first occurrence). Default: the instant the stored view is as of.
"""

import shlex
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from projections.as_of import policy_of
from projections.explain import explain
from projections.timeline import parse_instant
from services.api.auth import ApiError, Principal
from services.api.console import paths  # noqa: F401 - the routes' "id" convertor
from services.api.console.access import console_reader
from services.api.console.clock_picture import epoch, picture
from services.api.console.clock_svg import clocks_svg
from services.api.console.render import page
from services.api.queries import active_generation, store_call
from services.api.queries import now as queries_now
from services.api.scope import MAX_ID, no_ticket
from services.api.state import services
from services.worker.histories import UnknownTicket, find_ticket, generation_contracts, stored_histories

router = APIRouter(prefix="/ui", include_in_schema=False)
Viewer = Annotated[Principal, Depends(console_reader)]


class BadInstant(ValueError):
    """An ``as_of`` that is neither RFC 3339 nor a local wall time, or is in the future."""


def parse_as_of(value: str, zone: str, now: datetime, skew_s: float = 0) -> datetime:
    """``value`` as an instant: ``now``, RFC 3339 with an offset, else a wall time of ``zone``;
    ahead of ``now`` by at most ``skew_s`` (a browser's clock ahead of ours) it is now, as in the
    API (SLATRACK_API_CLOCK_SKEW_S)."""
    value = value.strip()
    now = now.replace(microsecond=0)
    if value == "now":
        return now
    try:
        instant = parse_instant(value)
    except ValueError:
        try:
            local = datetime.fromisoformat(value)
        except ValueError:
            raise BadInstant(
                f"as_of {value!r}: give an RFC 3339 instant (2026-11-09T15:00:00Z) or a local time "
                "(2026-11-09T10:00)"
            ) from None
        if local.tzinfo is not None:
            raise BadInstant(f"as_of {value!r}: out of range") from None
        try:
            instant = local.replace(tzinfo=ZoneInfo(zone), microsecond=0).astimezone(UTC)
        except (OverflowError, ValueError):  # year 1 east of UTC, year 9999 west of it
            raise BadInstant(f"as_of {value!r}: out of range") from None
    if instant > now + timedelta(seconds=skew_s):
        raise BadInstant(f"as_of {value!r}: must not be in the future")
    return min(instant, now)


@router.get("/customers/{customer_id:id}/tickets/{ticket_id:id}")
async def ticket_page(
    request: Request, customer_id: str, ticket_id: str, principal: Viewer, as_of: str | None = None
) -> Response:
    try:
        return await _ticket_page(request, customer_id, ticket_id, principal, as_of)
    except ApiError as exc:  # a 404, a 503 of the store: the console's error page, not JSON
        title = {404: "Not found", 422: "Not valid"}.get(exc.status_code, "Unavailable")
        return page(
            request, "error.html", exc.status_code, title=title, message=exc.detail, principal=principal
        )


def _storable(text: str) -> bool:
    return 0 < len(text) <= MAX_ID and "\x00" not in text


async def _ticket_page(
    request: Request, customer_id: str, ticket_id: str, principal: Principal, as_of: str | None
) -> Response:
    if not principal.sees(customer_id) or not _storable(customer_id) or not _storable(ticket_id):
        raise no_ticket(ticket_id)  # before the store: as an id that exists nowhere
    store, generation = await active_generation(request)
    try:
        key = await store_call(find_ticket, store, generation, ticket_id, customer_id, principal.customers)
    except UnknownTicket:
        raise no_ticket(ticket_id) from None
    row = await store_call(store.ticket, generation, key)
    if row is None:
        raise no_ticket(ticket_id)
    configured = services(request.app).policy
    contracts = await store_call(generation_contracts, store, generation, configured)
    evaluated = datetime.fromtimestamp(row.evaluated_at, UTC)
    now = queries_now(request)
    skew = services(request.app).settings.api_clock_skew_s

    def trail() -> tuple[dict[str, Any] | None, datetime, str]:
        records, account = stored_histories(store, generation, key)
        policy = policy_of(records, account, contracts, evaluated)
        zone = policy.calendar(policy.billing.month_calendar).tz.key
        instant = parse_as_of(as_of, zone, now, skew) if as_of else evaluated
        return explain(records, account, contracts, instant), instant, zone

    try:
        document, instant, zone = await store_call(trail)
    except BadInstant as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    if document is None:
        stamp = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ApiError(404, "not_found", f"the ticket {ticket_id!r} was not opened as of {stamp}")
    # A configured policy file (SLATRACK_POLICY_FILE) is not in the log: an auditor needs it too.
    context = _context(document, zone, instant, services(request.app).settings.policy_file is not None)
    title = f"Ticket {ticket_id}"
    return page(request, "ticket.html", title=title, principal=principal, as_of_param=as_of, **context)


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromtimestamp(epoch(text), UTC)


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) or "none"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _effect_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries as the table shows them: each effect its kind and its details."""
    return [
        {
            "at": _when(entry["occurred_at"]),
            "event_id": entry["event_id"],
            "position": entry["position"],
            "type": entry["type"],
            "effects": [
                (
                    effect["effect"],
                    "; ".join(
                        f"{k.replace('_', ' ')}: {_value(v)}" for k, v in effect.items() if k != "effect"
                    ),
                )
                for effect in entry["effects"]
            ],
        }
        for entry in document["entries"]
    ]


def _billing_lines(billing: dict[str, Any]) -> list[tuple[str, str]]:
    """The billing computation, one line per step (docs/audit.md, ``billing``)."""
    lines = [("rule", _value(billing["rule"])), ("why", billing["why"]), ("status", billing["status"])]
    lines.append(("month", _value(billing["month"])))
    work = [f"{a} – {b}" for a, b in billing["work"]]
    lines.append(("work logged (union)", "; ".join(work) or "none"))
    lines.append(("worked seconds", str(billing["worked_seconds"])))
    calendar = billing["after_hours_calendar"]
    lines.append(
        (f"after-hours seconds (outside the {calendar} calendar)", str(billing["after_hours_seconds"]))
    )
    if billing["rule"] is None:
        return lines
    lines.append((f"counted: {billing['counted'].replace('_', ' ')}", f"{billing['counted_seconds']} s"))
    minimum = f"{billing['minimum_seconds']} s, applies {_value(billing['minimum_applies'])}"
    lines.append(("minimum", minimum))
    lines.append(("minimum applied", _value(billing["minimum_applied"])))
    if billing["rule"] == "uncovered_p1":
        lines.append(("fault party", _value(billing["fault_party"])))
        lines.append(("waived parties", _value(billing["waived_parties"])))
    lines.append(("billable seconds", str(billing["billable_seconds"])))
    rate = billing["rate_cents_per_hour"]
    lines.append(("rate", f"{rate} cents an hour"))
    lines.append(
        ("exact amount", f"{billing['billable_seconds']} s × {rate} / 3600 = {billing['exact_cents']} cents")
    )
    lines.append((f"rounded {billing['rounding']}", f"{billing['amount_cents']} cents"))
    return lines


def replay_commands(document: dict[str, Any], other_policy: bool) -> str:
    """The commands that recompute this page from the log (services/cli/commands.py)."""
    customer, ticket = shlex.quote(document["customer_id"]), shlex.quote(document["ticket_id"])
    as_of = document["as_of"]
    lines = [
        "# 1. the log, policy versions first (run by the operator; hand the file over)",
        f"slatrack export --customer {customer} --out log.jsonl",
        "# 2. this ticket's audit trail as of this page's instant: the digest must be",
        f"#    {document.get('digest', '')}",
        f"slatrack explain {ticket} --customer {customer} --events log.jsonl --as-of {as_of} --format json",
        "# 3. every view of the log at that instant (this ticket's among them)",
        f"slatrack replay --events log.jsonl --as-of {as_of}",
    ]
    if other_policy:
        lines.append(
            "# run 2 and 3 with SLATRACK_POLICY_FILE=POLICY.toml, the provider's configured policy "
            "(it measures where the default contract has no published version; not in the log)"
        )
    return "\n".join(lines)


def _context(document: dict[str, Any], zone: str, instant: datetime, other_policy: bool) -> dict[str, Any]:
    quarantined = "quarantine" in document
    local = instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None).isoformat(timespec="seconds")
    return {
        "document": document,
        "view": document["view"],
        "zone": zone,
        "as_of": instant,
        "as_of_local": local,
        "quarantined": quarantined,
        "svg": None if quarantined else clocks_svg(picture(document)),
        "entries": [] if quarantined else _effect_rows(document),
        "billing_lines": [] if quarantined else _billing_lines(document["billing"]),
        "replay": replay_commands(document, other_policy),
        "when": _when,
    }
