"""Billable time (policy §3 new installs, §5 uncovered Priority 1 events).

Money is integer cents and time integer seconds; nothing here is a float.
Logged work is the union of a ticket's ``ticket.work_logged`` intervals
(overlaps count once); its *after-hours* part is what falls outside the
billing calendar's open time.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from projections.policy import Policy
from projections.views import BillingRule, BillingStatus, BillingView

Interval = tuple[datetime, datetime]
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Billing:
    rule: BillingRule | None
    status: BillingStatus
    billable_seconds: int  # what is billed, minimum included
    amount_cents: int
    month: str | None  # "YYYY-MM" of dispatch in the month calendar's zone
    worked_seconds: int
    after_hours_seconds: int

    def as_view(self) -> BillingView:
        return BillingView(
            rule=self.rule,
            status=self.status,
            billable_seconds=self.billable_seconds,
            amount_cents=self.amount_cents,
            month=self.month,
        )


def merge(intervals: list[Interval]) -> list[Interval]:
    """The union of intervals, as disjoint intervals in order."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def amount_cents(seconds: int, rate_cents_per_hour: int) -> int:
    """seconds x rate / 3600, rounded half up to the cent (exact integer arithmetic)."""
    return (2 * seconds * rate_cents_per_hour + 3600) // 7200


def rule_for(
    policy: Policy,
    category: str,
    dispatch_priority: str,
    dispatched_at: datetime,
    after_hours: bool,
    priority_handling: bool,
) -> BillingRule | None:
    """Which billing rule a ticket falls under, from how it was opened."""
    if category == "new_install":
        return "new_install" if (after_hours or priority_handling) else None
    outside = not policy.calendar(policy.billing.after_hours_calendar).is_open(dispatched_at)
    if dispatch_priority == policy.billing.uncovered_p1.priority and outside:
        return "uncovered_p1"
    return None


def bill(
    policy: Policy,
    rule: BillingRule | None,
    dispatched_at: datetime,
    work: list[Interval],
    priority_handling: bool,
    fault_party: str | None,
) -> Billing:
    settings = policy.billing
    union = merge(work)
    worked = sum((end - start) // _SECOND for start, end in union)
    calendar = policy.calendar(settings.after_hours_calendar)
    after_hours = worked - sum(calendar.open_seconds(start, end) for start, end in union)
    if rule is None:
        return Billing(None, "none", 0, 0, None, worked, after_hours)
    month = month_of(policy, dispatched_at)

    if rule == "new_install":
        counted = worked if priority_handling else after_hours
        billed = _with_minimum(counted, settings.new_install.minimum, settings.new_install.minimum_applies)
    else:
        rules = settings.uncovered_p1
        if fault_party is None:
            return Billing(rule, "pending_review", 0, 0, month, worked, after_hours)
        if fault_party in rules.waived_parties:
            return Billing(rule, "waived", 0, 0, month, worked, after_hours)
        billed = _with_minimum(after_hours, rules.minimum, rules.minimum_applies)
    amount = amount_cents(billed, settings.rate_cents_per_hour)
    return Billing(rule, "billable", billed, amount, month, worked, after_hours)


def month_of(policy: Policy, dispatched_at: datetime) -> str:
    """A ticket's month, ``YYYY-MM``: the month of its dispatch in the zone of the policy's
    ``billing.month_calendar``. Its charge's month (``billing.month``) and the monthly report's
    (projections.report) alike, with or without a billing rule."""
    return policy.calendar(policy.billing.month_calendar).local_date(dispatched_at).strftime("%Y-%m")


def _with_minimum(seconds: int, minimum: int, applies: str) -> int:
    if seconds == 0 and applies == "when_billable":
        return 0
    return max(seconds, minimum)
