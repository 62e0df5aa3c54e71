"""Contracts for tests: a 24x7 premium contract in Berlin, an amendment of the default one, and
their policy events (issue 13)."""

import uuid
from datetime import UTC, datetime

from events.policies import PolicyVersionPublished, encode_policy_event
from projections.contracts import PolicyVersion, version_of
from projections.policy import DEFAULT_POLICY_RESOURCE, parse_policy

PUBLISHED_AT = datetime(2026, 10, 1, tzinfo=UTC)


def default_text() -> str:
    from importlib import resources

    return resources.files("projections").joinpath(DEFAULT_POLICY_RESOURCE).read_text(encoding="utf-8")


def premium_text() -> str:
    """Every clock round the clock, business hours (for billing) in Berlin, a version of its own."""
    text = default_text().replace('version = "default-2026.1"', 'version = "premium-2026.1"', 1)
    text = text.replace('time_zone = "America/New_York"', 'time_zone = "Europe/Berlin"', 1)
    text = text.replace('calendar = "business" }', 'calendar = "24x7" }')
    assert parse_policy(text).version == "premium-2026.1"
    return text


def amended_text() -> str:
    """The default contract, amended: medium tickets get a response within 2 h instead of 4 h."""
    text = default_text().replace('version = "default-2026.1"', 'version = "default-2026.2"', 1)
    text = text.replace(
        'response = { target = "4h", calendar = "business" }',
        'response = { target = "2h", calendar = "business" }',
        1,
    )
    assert parse_policy(text).targets("medium").response.target == 7200
    return text


def policy_event(
    text: str,
    contract: str,
    effective_from: datetime,
    *,
    published_at: datetime = PUBLISHED_AT,
    retroactive: bool = False,
) -> PolicyVersionPublished:
    policy = parse_policy(text)
    return PolicyVersionPublished(
        event_id=str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{contract}/{effective_from.isoformat()}/{policy.digest}")
        ),
        type="policy.version_published",
        schema_version=1,
        occurred_at=published_at,
        contract=contract,
        effective_from=effective_from,
        retroactive=retroactive,
        policy_version=policy.version,
        digest=policy.digest,
        policy=text,
    )


def published(text: str, contract: str, effective_from: datetime, position: int, **kw) -> PolicyVersion:
    return version_of(policy_event(text, contract, effective_from, **kw), position)


def policy_line(text: str, contract: str, effective_from: datetime, **kw) -> bytes:
    """A policy event as a line of an export."""
    return encode_policy_event(policy_event(text, contract, effective_from, **kw))
