"""What-if: what changes between two policies on the same history.

:func:`compare` takes two :func:`projections.replay.replay` documents of the
same events as of the same instant, one per policy, and lists per customer
the breaches (ticket, clock, cycle) that appear, disappear or move, and the
charges that change, per ticket and per month. Pure: documents in, document
out. Breaches per cycle need documents made with ``replay(..., breaches=True)``;
without that list, the views' per-clock ``breached`` flags are compared
(``cycle`` is then null).
"""

from typing import Any

BILLING_FIELDS = ("rule", "status", "billable_seconds", "amount_cents")


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per customer, what ``new`` (the policy tried) changes against ``old`` (the reference)."""
    if old["as_of"] != new["as_of"]:
        raise ValueError(f"the replays are as of different instants: {old['as_of']} and {new['as_of']}")
    owners = {t["ticket_id"]: t["customer_id"] for doc in (old, new) for t in doc["tickets"]}
    changes: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add(customer: str, kind: str, item: dict[str, Any]) -> None:
        changes.setdefault(customer, {"breaches": [], "tickets": [], "months": []})[kind].append(item)

    for breach in _breach_changes(old, new):
        add(owners[breach["ticket_id"]], "breaches", breach)
    for ticket in _ticket_changes(old, new):
        add(owners[ticket["ticket_id"]], "tickets", ticket)
    for customer, month in _month_changes(old, new):
        add(customer, "months", month)
    customers = [{"customer_id": c, **changes[c]} for c in sorted(changes)]
    return {
        "as_of": new["as_of"],
        "old_policy_version": old["policy_version"],
        "new_policy_version": new["policy_version"],
        "summary": _summary(customers),
        "customers": customers,
    }


def _breaches(document: dict[str, Any]) -> dict[tuple[str, str, int | None], str | None]:
    """(ticket, clock, cycle) -> breach instant; per clock (cycle None) without a breaches list."""
    if "breaches" in document:
        return {(b["ticket_id"], b["clock"], b["cycle"]): b["at"] for b in document["breaches"]}
    return {
        (t["ticket_id"], name, None): None
        for t in document["tickets"]
        for name, clock in t["clocks"].items()
        if clock["breached"]
    }


def _breach_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    before, after = _breaches(old), _breaches(new)
    found = []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (k[0], k[1], k[2] or 0)):
        if key in before and key in after and before[key] == after[key]:
            continue
        change = "moved" if key in before and key in after else "removed" if key in before else "added"
        ticket_id, clock, cycle = key
        found.append(
            {
                "ticket_id": ticket_id,
                "clock": clock,
                "cycle": cycle,
                "change": change,
                "old_at": before.get(key),
                "new_at": after.get(key),
            }
        )
    return found


def _ticket_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    before = {t["ticket_id"]: t["billing"] for t in old["tickets"]}
    after = {t["ticket_id"]: t["billing"] for t in new["tickets"]}
    found = []
    for ticket_id in sorted(before.keys() | after.keys()):
        was, now = _billing(before.get(ticket_id)), _billing(after.get(ticket_id))
        if was == now:
            continue
        month = (after.get(ticket_id) or before.get(ticket_id) or {}).get("month")
        delta = now["amount_cents"] - was["amount_cents"]
        found.append({"ticket_id": ticket_id, "month": month, "old": was, "new": now, "delta_cents": delta})
    return found


def _billing(billing: dict[str, Any] | None) -> dict[str, Any]:
    # A ticket missing from one side (it cannot be, for the same history) bills nothing there.
    if billing is None:
        return {"rule": None, "status": "none", "billable_seconds": 0, "amount_cents": 0}
    return {name: billing[name] for name in BILLING_FIELDS}


def _month_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    before = {c["customer_id"]: c["billing"] for c in old["customers"]}
    after = {c["customer_id"]: c["billing"] for c in new["customers"]}
    zero = {"amount_cents": 0, "billable_seconds": 0}
    found = []
    for customer in sorted(before.keys() | after.keys()):
        months_before, months_after = before.get(customer, {}), after.get(customer, {})
        for month in sorted(months_before.keys() | months_after.keys()):
            was, now = months_before.get(month, zero), months_after.get(month, zero)
            if was != now:
                delta = now["amount_cents"] - was["amount_cents"]
                found.append((customer, {"month": month, "old": was, "new": now, "delta_cents": delta}))
    return found


def _summary(customers: list[dict[str, Any]]) -> str:
    if not customers:
        return "no differences"
    breaches = sum(len(c["breaches"]) for c in customers)
    tickets = sum(len(c["tickets"]) for c in customers)
    delta = sum(m["delta_cents"] for c in customers for m in c["months"])
    return (
        f"customers affected: {len(customers)}; breaches changed: {breaches}; "
        f"ticket charges changed: {tickets}; amounts: {delta:+d} cents in all"
    )
