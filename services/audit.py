"""The auditor's tools around the pure engine: where `slatrack explain` gets a
ticket's history, and the tables printed for people by `explain` and by the
what-if `replay --compare` (the JSON documents are the record; see docs/audit.md).
"""

from functools import lru_cache
from typing import Any

from events import ACCOUNT_EVENT_TYPES
from projections.policy import Policy, parse_policy
from projections.timeline import Recorded, TicketKey, ticket_key
from services.projector import decode_stored
from services.store.base import ReadModelStore, TicketQuery


class UnknownTicket(LookupError):
    """No event of this ticket in the read models."""


class AmbiguousTicket(LookupError):
    """The ticket id exists under several customers: name the customer."""

    def __init__(self, ticket_id: str, customers: list[str]):
        super().__init__(
            f"ticket {ticket_id!r} exists under {len(customers)} customers ({', '.join(customers)}): "
            "name the customer"
        )
        self.customers = customers


def split_history(
    records: list[Recorded], ticket_id: str, customer_id: str | None = None
) -> tuple[list[Recorded], list[Recorded]]:
    """A whole history -> the ticket's own events and its customer's account events.

    A ticket is (customer_id, ticket_id): with no ``customer_id``, the id must
    belong to one customer that opened it, or (none did) to one customer only
    (:class:`AmbiguousTicket` otherwise), as :func:`find_ticket` decides.
    """
    keys = {key for r in records if (key := ticket_key(r.event)) is not None and key[1] == ticket_id}
    if customer_id is not None:
        keys = {key for key in keys if key[0] == customer_id}
    opened = {ticket_key(r.event) for r in records if r.event.type == "ticket.opened"} & keys
    key = _one(ticket_id, opened or keys)
    mine = [r for r in records if ticket_key(r.event) == key]
    account = [r for r in records if r.event.type in ACCOUNT_EVENT_TYPES and r.event.customer_id == key[0]]
    return mine, account


def find_ticket(
    store: ReadModelStore, generation: int, ticket_id: str, customer_id: str | None = None
) -> TicketKey:
    """The ticket with this id (of this customer, if given) in the read models.

    Without a customer, an opened ticket is preferred to placeholders of tickets never
    opened: another customer's stray event for this id does not make the id ambiguous.
    """
    rows = store.list_tickets(generation, TicketQuery(ticket_id=ticket_id, customer_id=customer_id, limit=50))
    opened = [row for row in rows if row.state != "pending"]
    return _one(ticket_id, {row.key for row in (opened or rows)})


def _one(ticket_id: str, keys: set[TicketKey]) -> TicketKey:
    if not keys:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}")
    if len(keys) > 1:
        raise AmbiguousTicket(ticket_id, sorted(c for c, _ in keys))
    return next(iter(keys))


def stored_histories(
    store: ReadModelStore, generation: int, ticket: TicketKey
) -> tuple[list[Recorded], list[Recorded]]:
    """The ticket's stored events and its customer's account events."""
    records = decode_stored(store.events_of_tickets(generation, [ticket]).get(ticket, []))
    customer = ticket[0]
    return records, decode_stored(store.account_events_of(generation, [customer]).get(customer, []))


def generation_policy(store: ReadModelStore, generation: int, configured: Policy) -> Policy:
    """The policy a generation's rows are computed with (the configured one if it records none)."""
    text = store.generation_policy(generation)
    if text is None or text == configured.text:
        return configured
    return _parsed(text, f"generation {generation}")


@lru_cache(maxsize=8)
def _parsed(text: str, source: str) -> Policy:
    return parse_policy(text, source)


def histories_from_store(
    store: ReadModelStore, ticket_id: str, customer_id: str | None, configured: Policy
) -> tuple[list[Recorded], list[Recorded], Policy]:
    """The ticket's recorded events, its customer's account events and the policy of the active generation."""
    generation = store.active_generation()
    if generation is None:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}: the read models hold no generation yet")
    try:
        key = find_ticket(store, generation, ticket_id, customer_id)
    except UnknownTicket:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}: no event of it in the read models") from None
    records, account = stored_histories(store, generation, key)
    return records, account, generation_policy(store, generation, configured)


# -- explain, for people ---------------------------------------------------------------


def explain_table(document: dict[str, Any]) -> str:
    """One line per effect (instant, event, effect, detail), then the final view, policy and digest."""
    if "quarantine" in document:
        return _quarantine_text(document)
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


def _quarantine_text(document: dict[str, Any]) -> str:
    q = document["quarantine"]
    return (
        f"ticket {document['ticket_id']}   customer {document['customer_id']}   "
        f"as of {document['as_of']}   policy {document['policy_version']}\n\n"
        f"QUARANTINED: the engine raised evaluating this ticket (a bug, not bad input): {q['error']}\n"
        f"last event: {q['event_id']} ({q['event_type']}); see README, Operations"
    )


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
