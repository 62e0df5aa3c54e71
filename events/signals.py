"""Pydantic models of the SLA signals slatrack sends to `sla-signals` (see `docs/signals.md`).

The event contract (:mod:`events.models`) is what slatrack reads; this is what
it writes. One model per signal type; :data:`SlaSignal` is their discriminated
union on `type`. A model describes a message as it is on the topic: the
payload built by `projections.signals` plus `late_by_seconds`, which the
outbox relay adds when it sends it. Models are strict and forbid unknown keys,
so that they, and the JSON Schemas generated from them (`docs/schemas/signals/`),
say exactly what a payload holds: a consumer that wants to stay open to later
additions should ignore unknown keys itself rather than validate with these.

Pure data definitions: no I/O.
"""

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from events.models import EVENT_TYPES, Id

# How every instant of a signal is written: UTC, whole seconds, "Z".
UTC_INSTANT_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
SIGNAL_ID_PATTERN = r"^[0-9a-f]{32}$"
POLICY_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
# Why a level was raised: a clock's breach, a share of the resolution target, or a request.
ESCALATION_CAUSE_PATTERN = (
    r"^(response_breached|resolution_breached|resolution_[1-9][0-9]*_percent|requested_by_(customer|agent))$"
)


_UTC_INSTANT = re.compile(UTC_INSTANT_PATTERN)


def _utc_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value  # AwareDatetime still rejects a naive one; _utc one in another zone
    if isinstance(value, str) and _UTC_INSTANT.match(value):
        return value
    raise ValueError("must be a UTC instant with whole seconds and a Z, e.g. 2026-11-02T15:00:01Z")


def _utc(value: datetime) -> datetime:
    if value.utcoffset() != timedelta(0) or value.microsecond:
        raise ValueError("must be a UTC instant with whole seconds")
    return value


UtcInstant = Annotated[
    AwareDatetime,
    Field(strict=False, json_schema_extra={"pattern": UTC_INSTANT_PATTERN}),
    BeforeValidator(_utc_text),
    AfterValidator(_utc),
]
SignalId = Annotated[str, Field(pattern=SIGNAL_ID_PATTERN)]
ClockName = Literal["response", "resolution"]
CycleNumber = Annotated[int, Field(ge=1)]
Priority = Literal["urgent", "high", "medium", "low"]
Level = Annotated[int, Field(ge=1, le=3)]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]  # the contract's types, in its order

SIGNAL_ID = (
    "The signal's identity, 32 hex digits derived from its cause (never from when it was computed): "
    "a copy sent again, by a restart, a rebalance or a rebuild, has the same id. Deduplicate on it."
)
TYPE = "The signal type: what happened, and which fields follow (docs/signals.md)."
AT = "The instant the signal describes (UTC, whole seconds); see each type."
LATE_BY = (
    "Whole seconds between `at` and the moment the relay sent the message (never negative). "
    "The only field that is not a function of the log: two copies of one signal may differ in it."
)


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Signal(_Model):
    signal_id: SignalId = Field(description=SIGNAL_ID)
    type: str
    ticket_id: Id = Field(description="The ticket the signal is about (its ticket.opened's ticket_id).")
    customer_id: Id = Field(description="The ticket's customer; also the message key.")
    policy_version: str = Field(
        min_length=1,
        max_length=256,
        description="The `version` of the SLA policy the ticket was evaluated under.",
    )
    policy_digest: str = Field(
        pattern=POLICY_DIGEST_PATTERN,
        description="SHA-256 of the policy's settings (whatever its comments and layout), as `sha256:<hex>`.",
    )
    at: UtcInstant = Field(description=AT)
    late_by_seconds: int = Field(ge=0, description=LATE_BY)


class _ClockSignal(_Signal):
    clock: ClockName = Field(description="The SLA clock whose threshold was reached.")
    cycle: CycleNumber = Field(
        description="Which cycle of that clock, from 1 (a priority change starts a new cycle)."
    )
    priority: Priority = Field(description="The priority of that cycle.")
    target_seconds: int = Field(
        ge=0, description="The cycle's target, in seconds of its calendar's open time."
    )


class SlaWarning(_ClockSignal):
    """A cycle's elapsed time reached the policy's warning threshold (a share of its target)."""

    type: Literal["sla.warning"] = Field(description=TYPE)
    at: UtcInstant = Field(description="When the cycle's elapsed time reached the warning threshold.")
    due_at: UtcInstant = Field(
        description="When the cycle falls due if its clock keeps running from the warning on (its "
        "calendar's open time): the same however late the warning is found."
    )


class SlaBreached(_ClockSignal):
    """A cycle's elapsed time exceeded its target (`at`: the first second past it)."""

    type: Literal["sla.breached"] = Field(description=TYPE)
    at: UtcInstant = Field(description="The first second past the target: elapsed = target + 1 s.")
    due_at: UtcInstant = Field(description="When the cycle was due: elapsed reached its target.")


class EscalationRaised(_Signal):
    """The ticket reached an escalation level, by a threshold or a request (one per level and cause)."""

    type: Literal["escalation.raised"] = Field(description=TYPE)
    at: UtcInstant = Field(
        description="When the level was reached: the threshold's instant, or the request's `occurred_at`."
    )
    clock: ClockName | None = Field(
        description="The clock whose threshold raised the level; null when someone requested it."
    )
    cycle: CycleNumber | None = Field(
        description="That clock's cycle; null when someone requested the level."
    )
    level: Level = Field(description="The escalation level reached, 1 to 3.")
    cause: str = Field(
        pattern=ESCALATION_CAUSE_PATTERN,
        description="Why: `<clock>_breached`, `resolution_<N>_percent` (elapsed reached N % of the "
        "resolution target), or `requested_by_customer` / `requested_by_agent`.",
    )


class BillingFinalized(_Signal):
    """The ticket's charge is settled (closed, or its fault determined, and no work still running).

    A later change of the amount (more work logged, another fault) is another cause: a new signal.
    """

    type: Literal["billing.finalized"] = Field(description=TYPE)
    at: UtcInstant = Field(
        description="The `occurred_at` of the latest event the charge depends on (the opening, "
        "a work log, the fault, the closing)."
    )
    clock: None = Field(description="Always null: a charge is not about one clock.")
    cycle: None = Field(description="Always null.")
    rule: Literal["new_install", "uncovered_p1"] = Field(
        description="The billing rule the ticket falls under."
    )
    status: Literal["billable", "pending_review", "waived"] = Field(
        description="`billable`; `pending_review` (an uncovered P1 closed with no fault determined); "
        "`waived` (the fault is one the policy waives)."
    )
    amount_cents: int = Field(ge=0, description="What is charged, in integer cents.")
    billable_seconds: int = Field(ge=0, description="The seconds billed, any minimum included.")
    month: str = Field(
        pattern=MONTH_PATTERN, description="`YYYY-MM` of the dispatch, in the policy's month calendar's zone."
    )


class Because(_Model):
    """An event that took the revoked signal back."""

    event_id: Id = Field(description="The event's `event_id`.")
    type: EventType = Field(description="The event's `type`.")
    occurred_at: UtcInstant = Field(description="The event's `occurred_at`, in UTC, to the second.")


class RevokedBreach(_Model):
    """What the revoked `sla.breached` said."""

    type: Literal["sla.breached"] = Field(description="The revoked signal's `type`.")
    clock: ClockName = Field(description="The revoked signal's `clock`.")
    cycle: CycleNumber = Field(description="The revoked signal's `cycle`.")
    at: UtcInstant = Field(description="The revoked signal's `at`.")
    policy_version: str = Field(description="The `policy_version` of the revoked signal.")


class RevokedEscalation(_Model):
    """What the revoked `escalation.raised` said."""

    type: Literal["escalation.raised"] = Field(description="The revoked signal's `type`.")
    clock: ClockName | None = Field(description="The revoked signal's `clock`.")
    cycle: CycleNumber | None = Field(description="The revoked signal's `cycle`.")
    at: UtcInstant = Field(description="The revoked signal's `at`.")
    level: Level = Field(description="The revoked signal's `level`.")
    policy_version: str = Field(description="The `policy_version` of the revoked signal.")


class _Revocation(_Signal):
    at: UtcInstant = Field(
        description="When slatrack found out: the instant the ticket was evaluated at, its customer's "
        "log time (the latest `occurred_at` of the customer's events so far, never past the worker's "
        "clock), or the worker's clock for a timer pass. Not the instant of the late event."
    )
    revokes: SignalId = Field(description="The `signal_id` of the signal taken back.")
    reason: Literal["late_event", "rebuild"] = Field(
        description="`late_event`: events that arrived late changed the outcome (listed in `because`); "
        "`rebuild`: a rebuild of the read models (under another policy) recomputed the ticket."
    )
    because: list[Because] = Field(
        description="The events that took it back, as far as they are known: the late event, or the "
        "ticket's events in the batch that found out; empty when no event did (the read models rebuilt "
        "under another policy)."
    )


class SlaBreachRevoked(_Revocation):
    """A breach told earlier no longer holds. `at`: when slatrack found out (the ticket's evaluation)."""

    type: Literal["sla.breach_revoked"] = Field(description=TYPE)
    clock: ClockName = Field(description="The revoked breach's clock.")
    cycle: CycleNumber = Field(description="The revoked breach's cycle.")
    revoked: RevokedBreach = Field(description="What the revoked signal said.")


class EscalationRevoked(_Revocation):
    """An escalation level told earlier no longer holds. `at`: when slatrack found out."""

    type: Literal["escalation.revoked"] = Field(description=TYPE)
    clock: ClockName | None = Field(description="The revoked escalation's clock (null if it was requested).")
    cycle: CycleNumber | None = Field(
        description="The revoked escalation's cycle (null if it was requested)."
    )
    revoked: RevokedEscalation = Field(description="What the revoked signal said.")


SIGNAL_MODELS: dict[str, type[_Signal]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]  # the Literal
    for model in (
        SlaWarning,
        SlaBreached,
        EscalationRaised,
        BillingFinalized,
        SlaBreachRevoked,
        EscalationRevoked,
    )
}
SIGNAL_TYPES = tuple(SIGNAL_MODELS)

SlaSignal = Annotated[
    SlaWarning | SlaBreached | EscalationRaised | BillingFinalized | SlaBreachRevoked | EscalationRevoked,
    Field(discriminator="type"),
]
SIGNAL_ADAPTER: TypeAdapter[SlaSignal] = TypeAdapter(SlaSignal)
