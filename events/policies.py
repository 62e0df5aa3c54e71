"""The policy topic's one event: a version of a contract's policy, published.

``slatrack policy publish`` writes one to the policy topic (one partition, kept
forever); every worker reads the topic in full before projecting, and
``slatrack export`` writes its events first, so that the log alone reproduces
every number (docs/sla-semantics.md, "Contracts and versions"). The policy
itself travels as its TOML text; ``digest`` is the sha256 of its canonical
settings (projections.policy.canonical_policy), checked by every reader.
"""

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from events.codec import DEFAULT_MAX_EVENT_BYTES, EventRejected, RejectKind, _rejection
from events.models import ContractName, Id, Instant, SchemaVersion, ShortText

POLICY_EVENT_TYPE = "policy.version_published"
# A policy file is a few kilobytes; the seed policy is about 6 KiB.
MAX_POLICY_TEXT = 256 * 1024
MAX_POLICY_EVENT_BYTES = MAX_POLICY_TEXT + DEFAULT_MAX_EVENT_BYTES
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class PolicyVersionPublished(BaseModel):
    """A version of contract ``contract``, in force from ``effective_from`` (until the next one)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    event_id: Id = Field(description="The identity of the publication: a second copy is a duplicate.")
    type: Literal["policy.version_published"]
    schema_version: SchemaVersion
    occurred_at: Instant = Field(description="When it was published.")
    contract: ContractName
    effective_from: Instant
    retroactive: bool = Field(
        False, description="Published with an effective instant in the past (--retroactive)."
    )
    policy_version: ShortText = Field(description="The policy's own `version`, for listings.")
    digest: Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
    policy: Annotated[str, StringConstraints(min_length=1, max_length=MAX_POLICY_TEXT)] = Field(
        description="The policy file, TOML text."
    )


def decode_policy_event(raw: bytes | None) -> PolicyVersionPublished:
    """Validate one policy event (its envelope; the policy text is checked by
    projections.contracts.version_of); raise :class:`EventRejected` if it is not one."""
    if not raw:
        raise EventRejected(RejectKind.EMPTY, "the message has no value")
    if len(raw) > MAX_POLICY_EVENT_BYTES:
        raise EventRejected(
            RejectKind.TOO_LARGE, f"the event is {len(raw)} bytes; the limit is {MAX_POLICY_EVENT_BYTES}"
        )
    try:
        return PolicyVersionPublished.model_validate_json(raw)
    except ValidationError as exc:
        raise _rejection(exc) from None


def encode_policy_event(event: PolicyVersionPublished) -> bytes:
    """The canonical bytes: UTF-8 JSON, keys sorted."""
    return orjson.dumps(event.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def is_policy_event(raw: bytes) -> bool:
    """Whether a JSON line of an export is a policy event (read before any ticket event)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and document.get("type") == POLICY_EVENT_TYPE
