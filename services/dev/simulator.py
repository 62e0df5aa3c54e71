"""A simulated helpdesk: realistic, reproducible event histories.

Used by the benchmarks (and the demo feed): a few hundred customers, tickets
with the priority mix real desks see, responses, pending stretches,
resolutions and reopenings, after-hours urgent tickets with fault reviews,
new installs with work logs, overdue and disputed invoices. The same seed
gives the same events, so a benchmark measures the same work every run.
"""

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

PRIORITIES = (("urgent", 5), ("high", 15), ("medium", 40), ("low", 40))
CATEGORIES = (("service", 70), ("non_service", 20), ("new_install", 10))
MINUTE = timedelta(minutes=1)


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _at(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


class Helpdesk:
    def __init__(
        self,
        seed: int = 1,
        customers: int = 300,
        start: datetime | None = None,
        days: int = 60,
        id_prefix: str = "sim",
    ):
        self.rng = random.Random(seed)  # noqa: S311 - simulated traffic, not secrets
        self.customers = [f"cust-{i:04d}" for i in range(customers)]
        self.start = start or datetime(2026, 9, 1, tzinfo=UTC)
        self.span = timedelta(days=days)
        self._ids = 0
        self.id_prefix = id_prefix

    def _event(self, event_type: str, at: datetime, customer: str, ticket: str | None, **data: Any) -> dict:
        self._ids += 1
        event: dict[str, Any] = {
            "event_id": f"{self.id_prefix}-{self._ids}",
            "type": event_type,
            "schema_version": 1,
            "occurred_at": _at(at),
            "customer_id": customer,
            "source": "simulator",
            "data": data,
        }
        if ticket is not None:
            event["ticket_id"] = ticket
        return event

    def ticket(self, number: int, opened: datetime | None = None, priority: str | None = None) -> list[dict]:
        """One ticket's life, about ten events, in the order they happened (opened at a random
        instant of the span with a random priority, unless given)."""
        rng = self.rng
        customer = rng.choice(self.customers)
        ticket = f"T-{number:07d}"
        random_opened = self.start + timedelta(seconds=rng.randrange(int(self.span.total_seconds())))
        opened = opened or random_opened
        priority = priority or _pick(rng, PRIORITIES)
        category = _pick(rng, CATEGORIES)
        data: dict[str, Any] = {"priority": priority, "category": category}
        if category == "new_install":
            data["after_hours_requested"] = rng.random() < 0.5
            data["priority_handling_requested"] = rng.random() < 0.2
            data["install_date"] = (opened + timedelta(days=rng.randrange(2, 14))).date().isoformat()
        if rng.random() < 0.03:
            data["third_party_disconnect"] = True
        events = [self._event("ticket.opened", opened, customer, ticket, **data)]
        t = opened

        def later(low_minutes: int, high_minutes: int) -> datetime:
            nonlocal t
            t = t + rng.randrange(low_minutes, high_minutes) * MINUTE
            return t

        events.append(
            self._event("ticket.status_changed", later(1, 30), customer, ticket, status="in_progress")
        )
        events.append(self._event("ticket.responded", later(5, 600), customer, ticket, agent_id="agent-1"))
        if rng.random() < 0.1:
            new = _pick(rng, PRIORITIES)
            events.append(
                self._event("ticket.priority_changed", later(5, 240), customer, ticket, priority=new)
            )
        if rng.random() < 0.5:
            events.append(
                self._event(
                    "ticket.status_changed", later(10, 300), customer, ticket, status="pending_customer"
                )
            )
            events.append(
                self._event("ticket.status_changed", later(30, 2880), customer, ticket, status="open")
            )
        events.append(self._event("ticket.responded", later(10, 600), customer, ticket, agent_id="agent-2"))
        for _ in range(2 if rng.random() < 0.6 else 1):
            work_start = later(5, 120)
            work_end = later(15, 300)
            events.append(
                self._event(
                    "ticket.work_logged",
                    work_end,
                    customer,
                    ticket,
                    agent_id="agent-2",
                    started_at=_at(work_start),
                    ended_at=_at(work_end),
                )
            )
        if rng.random() < 0.05:
            events.append(
                self._event(
                    "ticket.escalation_requested",
                    later(10, 600),
                    customer,
                    ticket,
                    level=rng.randrange(1, 4),
                    requested_by="customer",
                )
            )
        if priority == "urgent":
            party = rng.choice(["provider", "customer", "third_party"])
            events.append(
                self._event("ticket.fault_determined", later(60, 1440), customer, ticket, party=party)
            )
        events.append(self._event("ticket.status_changed", later(5, 600), customer, ticket, status="solved"))
        events.append(self._event("ticket.resolved", later(0, 5), customer, ticket))
        if rng.random() < 0.1:
            events.append(self._event("ticket.reopened", later(60, 1440), customer, ticket))
            events.append(self._event("ticket.resolved", later(30, 1440), customer, ticket))
        events.append(self._event("ticket.closed", later(1440, 4320), customer, ticket, auto=True))
        return events

    def invoices(self) -> list[dict]:
        """Monthly invoices per customer: most paid on time, some late, a few disputed."""
        rng = self.rng
        events = []
        for customer in self.customers:
            for month in range(max(1, self.span.days // 30)):
                issued = self.start + timedelta(days=30 * month + rng.randrange(0, 5))
                due = issued + timedelta(days=30)
                invoice = f"INV-{customer}-{month}"
                events.append(
                    self._event(
                        "account.invoice_due", issued, customer, None, invoice_id=invoice, due_at=_at(due)
                    )
                )
                roll = rng.random()
                if roll < 0.85:
                    paid = due - timedelta(days=rng.randrange(0, 10))
                    events.append(
                        self._event("account.invoice_paid", paid, customer, None, invoice_id=invoice)
                    )
                elif roll < 0.92:
                    late = due + timedelta(days=rng.randrange(11, 25))
                    events.append(
                        self._event("account.invoice_paid", late, customer, None, invoice_id=invoice)
                    )
                elif roll < 0.96:
                    disputed = due + timedelta(days=rng.randrange(1, 12))
                    events.append(
                        self._event("account.invoice_disputed", disputed, customer, None, invoice_id=invoice)
                    )
                # else: still unpaid
        return events

    def history(self, tickets: int) -> Iterator[dict]:
        """Invoices, then ``tickets`` tickets' events (each ticket's in order)."""
        yield from self.invoices()
        for number in range(tickets):
            yield from self.ticket(number)
