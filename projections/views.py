"""The views as types: what a ticket shows (docs/sla-semantics.md, 9.1), and the two
placeholders a read model holds for a ticket that has no engine state (pending, quarantined).

These are the single statement of the views' fields: the engine builds them
(:meth:`projections.ticket.TicketState.view`), the worker maps them to its row
columns, and the API documents its answers with them (their JSON Schema), so a
field added here is stored, replayed and documented with no other edit.

The JSON of a view is :meth:`View.encode`: its fields in the order declared
here, nested views alike, serialised by orjson, so the same view always gives
the same bytes. Those bytes are what the read models store, what replay and
explain print and what the API answers; auditors compare them, so the order of
the fields is part of the contract (tests/unit/test_view_bytes.py pins it).
"""

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from events.models import Category, Priority
from projections.policy import ClockName

# An instant as the views print one: UTC, whole seconds, "Z" (projections.ticket.utc).
UtcInstant = str
ClockStatus = Literal["running", "paused", "stopped"]
Flag = Literal["short_install_notice", "escalation_not_entitled", "suspended", "contract_without_version"]
BillingRule = Literal["new_install", "uncovered_p1"]
BillingStatus = Literal["none", "billable", "pending_review", "waived"]


def _open_to_new_fields(schema: dict[str, Any]) -> None:
    # Built with exactly its fields (extra="forbid" catches a misspelt one), but documented
    # open: a later version may add fields, and readers are to ignore the ones they do not know.
    schema.pop("additionalProperties", None)


class View(BaseModel):
    """A part of a view: immutable, exactly its fields (strict: no value is coerced, so what
    the engine computed is what is printed)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", json_schema_extra=_open_to_new_fields)

    def document(self) -> dict[str, Any]:
        """JSON-ready: the fields in declaration order, nested views as dicts (a JSON document)."""
        return self.model_dump()

    def encode(self) -> bytes:
        """The view's JSON bytes (what a row stores and the API answers)."""
        return orjson.dumps(self.model_dump())


class ClockView(View):
    """A clock's current cycle (docs/sla-semantics.md, 9.1, CLOCK)."""

    status: ClockStatus = Field(
        description="`paused`: held by a pause status or a suspension; "
        "`stopped`: responded, resolved or closed"
    )
    calendar: str = Field(description="The current cycle's calendar name")
    target_seconds: int | None = Field(description="The current cycle's target, or null")
    elapsed_seconds: int = Field(description="Open seconds counted in the current cycle")
    due_at: UtcInstant | None = Field(description="When the current cycle falls due (§4.3)")
    breached: bool = Field(description="Whether any cycle of this clock breached")
    at_risk: bool = Field(description="Past the warning threshold, not breached, not stopped (§4.3)")
    cycles: int = Field(description="The number of cycles")


class Clocks(View):
    """The response and resolution clocks (§4)."""

    response: ClockView
    resolution: ClockView

    def named(self) -> dict[ClockName, ClockView]:
        """Each clock by its name, in the view's order."""
        return {"response": self.response, "resolution": self.resolution}

    @property
    def breached(self) -> bool:
        """Any clock breached, in any cycle."""
        return any(clock.breached for clock in self.named().values())

    @property
    def at_risk(self) -> bool:
        return any(clock.at_risk for clock in self.named().values())


class EscalationReason(View):
    """One escalation: requested by someone, or raised by a clock's threshold."""

    level: int
    at: UtcInstant
    cause: str = Field(
        description="`response_breached`, `resolution_breached`, `resolution_<N>_percent`, "
        "`requested_by_customer` or `requested_by_agent`"
    )
    entitled: bool


class EscalationView(View):
    """The escalation level and why (§6)."""

    level: int = Field(description="0 to 3 (§6)")
    reasons: list[EscalationReason] = Field(
        description="Every escalation, entitled or not, in time order (then by level)"
    )


class BillingView(View):
    """The charge (§7): the policy's rate over the billable seconds."""

    rule: BillingRule | None = Field(description="The billing rule the ticket falls under, if any (§7)")
    status: BillingStatus
    billable_seconds: int = Field(
        description="What is billed, minimum included; 0 when pending, waived or no rule"
    )
    amount_cents: int = Field(description="From billable_seconds (§7)")
    month: str | None = Field(description="YYYY-MM of dispatch, or null when there is no rule")


class TicketView(View):
    """A ticket's view as the SLA engine computes it at an instant (docs/sla-semantics.md, 9.1)."""

    ticket_id: str = Field(description="From the ticket.opened that counts")
    customer_id: str = Field(description="From the ticket.opened that counts")
    priority: Priority = Field(description="The current priority (after the last effective change)")
    category: Category = Field(description="From ticket.opened")
    state: Literal["open", "resolved", "closed"] = Field(description="§4.1")
    status: str = Field(description="The last ticket.status_changed value; `open` before any")
    opened_at: UtcInstant = Field(description="Dispatch, UTC")
    clocks: Clocks
    escalation: EscalationView
    billing: BillingView
    flags: list[Flag] = Field(description="§8, sorted")
    contract: str = Field(
        "default", description="The contract whose version measures the ticket (docs/sla-semantics.md)"
    )
    policy_version: str = Field(description="The policy file's `version`")
    policy_digest: str = Field(description="sha256 of the policy's settings (docs/audit.md)")


class PendingView(View):
    """The placeholder of a ticket whose ``ticket.opened`` is not in force yet (or missing)."""

    ticket_id: str
    customer_id: str
    state: Literal["pending"]
    opens_at: UtcInstant | None = Field(description="When its ticket.opened occurs, if one is recorded")


class Quarantine(View):
    """Why a ticket is quarantined."""

    error: str = Field(description="The exception's type and message")
    event_id: str | None = Field(description="The last event of the ticket's history as of then")
    event_type: str | None


class QuarantinedView(View):
    """A ticket the engine raised on (a bug, not bad input): the error and the event that
    triggered it, and no clocks, billing or escalation (README, Operations)."""

    ticket_id: str
    customer_id: str
    state: Literal["quarantined"]
    quarantine: Quarantine
    contract: str = "default"
    policy_version: str
    policy_digest: str


# What a ticket's row holds, told apart by its state.
StoredTicketView = Annotated[
    TicketView | PendingView | QuarantinedView,
    Field(
        discriminator="state",
        description="A ticket's view as its row holds it: the engine's view (open, resolved, closed), "
        "or the placeholder of a ticket not opened yet (pending) or quarantined",
    ),
]
