"""Every text table the ``slatrack`` command prints: a replay's summary, an explanation, a
what-if comparison, the policy versions. Each takes the JSON document the command would print
with --json."""

from typing import Any

# -- replay, for people ----------------------------------------------------------------


def replay_table(document: dict) -> str:
    """A summary for people: one line per ticket, then one per customer."""
    as_of, version, rejected = document["as_of"], document["policy_version"], document["rejected"]
    lines = [f"as of {as_of}   policy {version}   rejected lines: {rejected}", ""]
    header = f"{'ticket':<14} {'customer':<12} {'prio':<7} {'state':<9} {'response':<31} {'resolution':<31}"
    header += " esc  billing"
    lines += [header, "-" * len(header)]
    for t in document["tickets"]:
        if "quarantine" in t:
            q = t["quarantine"]
            lines.append(
                f"{t['ticket_id'][:14]:<14} {t['customer_id'][:12]:<12} QUARANTINED: {q['error']} "
                f"(last event {q['event_id']})"
            )
            continue
        billing = t["billing"]
        bill_text = (
            "-"
            if billing["rule"] is None
            else (f"{billing['rule']} {billing['status']} {dollars(billing['amount_cents'])}")
        )
        lines.append(
            f"{t['ticket_id'][:14]:<14} {t['customer_id'][:12]:<12} {t['priority']:<7} {t['state']:<9} "
            f"{clock_text(t['clocks']['response']):<31} {clock_text(t['clocks']['resolution']):<31} "
            f"{t['escalation']['level']:<4} {bill_text}"
            + (f"  [{', '.join(t['flags'])}]" if t["flags"] else "")
        )
    lines += ["", f"{'customer':<14} {'standing':<22} billing by month", "-" * 60]
    for c in document["customers"]:
        standing = (
            "dashboard suspended" if c["dashboard_suspended"] else "delinquent" if c["delinquent"] else "good"
        )
        months = ", ".join(f"{m}: {dollars(v['amount_cents'])}" for m, v in c["billing"].items()) or "-"
        lines.append(f"{c['customer_id'][:14]:<14} {standing:<22} {months}")
    return "\n".join(lines)


def dollars(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def clock_text(clock: dict) -> str:
    def hm(seconds: int) -> str:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

    target = "none" if clock["target_seconds"] is None else hm(clock["target_seconds"])
    mark = " BREACHED" if clock["breached"] else " at risk" if clock["at_risk"] else ""
    return f"{clock['status']:<7} {hm(clock['elapsed_seconds'])}/{target}{mark}"


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


# -- contracts: the policy topic's versions ----------------------------------------------


def published_policy(listing: dict[str, Any], topic: str) -> str:
    """What ``slatrack policy publish`` published, from the version's listing."""
    retroactive = " (retroactive)" if listing["retroactive"] else ""
    return (
        f"published contract {listing['contract']} version {listing['policy_version']} "
        f"({listing['digest']}), effective from {listing['effective_from']}{retroactive}, "
        f"to {topic} at offset {listing['position']}"
    )


def policy_table(listings: list[dict[str, Any]], topic: str) -> str:
    """One line per version, in the order published; a retroactive one says so."""
    header = ["offset", "contract", "version", "effective from", "published at", "digest"]
    rows = [
        [
            str(listing["position"]),
            listing["contract"],
            listing["policy_version"],
            listing["effective_from"],
            listing["published_at"],
            listing["digest"] + ("  retroactive" if listing["retroactive"] else ""),
        ]
        for listing in listings
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([*lines, f"{len(listings)} versions on {topic}"])
