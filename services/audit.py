"""The auditor's tools around the pure engine: where `slatrack explain` gets a
ticket's history, and the tables printed for people by `explain` and by the
what-if `replay --compare` (the JSON documents are the record; see docs/audit.md).
"""

from datetime import datetime
from typing import Any

from events import ACCOUNT_EVENT_TYPES
from projections.timeline import Recorded, history
from services.projector import decode_stored
from services.store.base import ReadModelStore


class UnknownTicket(LookupError):
    """No event of this ticket in the read models."""


def split_history(records: list[Recorded], ticket_id: str) -> tuple[list[Recorded], list[Recorded]]:
    """A whole history -> the ticket's own events and every account event (explain keeps its customer's)."""
    mine = [r for r in records if getattr(r.event, "ticket_id", None) == ticket_id]
    return mine, [r for r in records if r.event.type in ACCOUNT_EVENT_TYPES]


def stored_histories(
    store: ReadModelStore, generation: int, ticket_id: str, as_of: datetime | None = None
) -> tuple[list[Recorded], list[Recorded], str | None]:
    """The ticket's stored events, its customer's account events, and that customer.

    The customer is the one of the ``ticket.opened`` in force (as of ``as_of``),
    as in a replay; None, with no account events, if it was not opened by then.
    """
    records = decode_stored(store.events_of_tickets(generation, [ticket_id]).get(ticket_id, []))
    opened = next((r.event for r in history(records, as_of) if r.event.type == "ticket.opened"), None)
    if opened is None:
        return records, [], None
    customer = opened.customer_id
    return records, decode_stored(store.account_events_of(generation, [customer]).get(customer, [])), customer


def histories_from_store(store: ReadModelStore, ticket_id: str) -> tuple[list[Recorded], list[Recorded]]:
    """The ticket's recorded events and its customer's account events, from the active generation."""
    generation = store.active_generation()
    if generation is None:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}: the read models hold no generation yet")
    records, account, _ = stored_histories(store, generation, ticket_id)
    if not records:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}: no event of it in the read models")
    return records, account


# -- explain, for people ---------------------------------------------------------------


def explain_table(document: dict[str, Any]) -> str:
    """One line per effect (instant, event, effect, detail), then the final view, policy and digest."""
    rows = [
        (entry["occurred_at"], _event(entry), entry["type"], effect["effect"], _detail(effect))
        for entry in document["entries"]
        for effect in entry["effects"] or [{"effect": "-"}]
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(_HEADER[:4])]
    head = (
        f"ticket {document['ticket_id']}   customer {document['customer_id']}   "
        f"as of {document['as_of']}   policy {document['policy_version']}"
    )
    lines = [head, "", _row(_HEADER, widths), "-" * (sum(widths) + 2 * 4 + 30)]
    lines += [_row(row, widths) for row in rows]
    return "\n".join([*lines, "", *_view_summary(document), f"digest {document['digest']}"])


_HEADER = ("instant", "event (position)", "type", "effect", "detail")


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[4]


def _event(entry: dict[str, Any]) -> str:
    return "-" if entry["event_id"] is None else f"{entry['event_id']} ({entry['position']})"


def _detail(effect: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        if value is None:
            return "-"
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    return " ".join(f"{key}={text(value)}" for key, value in effect.items() if key != "effect")


def _view_summary(document: dict[str, Any]) -> list[str]:
    view, billing = document["view"], document["billing"]
    lines = [
        f"final view: state {view['state']}, status {view['status']}, priority {view['priority']}, "
        f"escalation level {view['escalation']['level']}, flags {', '.join(view['flags']) or '-'}"
    ]
    for name, clock in view["clocks"].items():
        target = "none" if clock["target_seconds"] is None else f"{clock['target_seconds']} s"
        mark = "  BREACHED" if clock["breached"] else "  at risk" if clock["at_risk"] else ""
        lines.append(
            f"  {name:<11} {clock['status']:<8} {clock['elapsed_seconds']} s of {target} "
            f"({clock['calendar']}), due {clock['due_at'] or '-'}, cycles {clock['cycles']}{mark}"
        )
    return [*lines, f"billing: {_billing_text(billing)}", f"policy {document['policy_version']}"]


def _billing_text(billing: dict[str, Any]) -> str:
    if billing["rule"] is None:
        return f"no rule ({billing['why']})"
    text = f"{billing['rule']} ({billing['why']}), {billing['status']}"
    if billing["status"] != "billable":
        return text + ", nothing billed"
    minimum = "applied" if billing["minimum_applied"] else "not applied"
    return (
        f"{text}: {billing['counted']} {billing['counted_seconds']} s, "
        f"minimum {billing['minimum_seconds']} s ({billing['minimum_applies']}) {minimum} -> "
        f"{billing['billable_seconds']} s x "
        f"{billing['rate_cents_per_hour']} cents/h / 3600 = {billing['exact_cents']} cents, "
        f"{billing['rounding']}: {billing['amount_cents']} cents, month {billing['month']}"
    )


# -- what-if, for people ---------------------------------------------------------------


def comparison_table(document: dict[str, Any]) -> str:
    """Per customer: the breaches and the charges that change from the old policy to the new."""
    lines = [
        f"what-if as of {document['as_of']}: policy {document['old_policy_version']} -> "
        f"{document['new_policy_version']}",
        "",
    ]
    for customer in document["customers"]:
        lines.append(f"customer {customer['customer_id']}")
        for b in customer["breaches"]:
            cycle = "" if b["cycle"] is None else f" cycle {b['cycle']}"
            lines.append(
                f"  breach  {b['ticket_id']} {b['clock']}{cycle}: {b['change']} "
                f"({b['old_at'] or '-'} -> {b['new_at'] or '-'})"
            )
        for t in customer["tickets"]:
            old, new = t["old"], t["new"]
            lines.append(
                f"  ticket  {t['ticket_id']} {t['month'] or '-'}: {old['amount_cents']} -> "
                f"{new['amount_cents']} cents ({t['delta_cents']:+d}), {old['billable_seconds']} -> "
                f"{new['billable_seconds']} s, {old['status']} -> {new['status']}"
            )
        for m in customer["months"]:
            lines.append(
                f"  month   {m['month']}: {m['old']['amount_cents']} -> {m['new']['amount_cents']} cents "
                f"({m['delta_cents']:+d})"
            )
    return "\n".join([*lines, document["summary"]])
