"""Contracts: which policy measures a ticket (docs/sla-semantics.md, "Contracts and versions").

A *contract* is a named policy with *versions*, each in force from an instant until the next
one; they are published on the policy topic (events.policies) and read in full by every reader
of the log. A customer is on one contract at a time, from its ``account.contract_changed``
events (the one effective latest at or before the instant asked; none: the default contract).

A ticket is measured, for its whole life, against the version of its customer's contract in
force at its dispatch (its ``ticket.opened``): the usual SLA-attach semantics. A customer
moving to another contract while a ticket is open does not move the ticket, unless the change
is effective from before the ticket's dispatch (a backdated change: the ticket was dispatched
under the new contract, and is measured so once the change is known). A contract with no
version in force at a ticket's dispatch measures nothing: the default contract's version does,
and the ticket's view says so (flag ``contract_without_version``).

With no policy event at all, the configured policy is the default contract's only version,
in force from the beginning: slatrack as it was before contracts.

Pure: the same account events, versions and instants give the same policy, for a worker, a
rebuild, the API's ``?as_of=`` and ``slatrack replay`` alike.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from events.models import AccountContractChanged
from events.policies import PolicyVersionPublished, encode_policy_event
from projections.policy import Policy, PolicyError, parse_policy
from projections.timeline import Recorded, opening, whole_second

DEFAULT_CONTRACT = "default"


@dataclass(frozen=True)
class PolicyVersion:
    """A published version of a contract, as read from the policy topic."""

    contract: str
    effective_from: datetime
    policy: Policy  # tagged with the contract and the instant
    position: int  # its offset on the policy topic (an export's line): later wins a tie
    event: PolicyVersionPublished

    @property
    def published_at(self) -> datetime:
        return whole_second(self.event.occurred_at)

    def listing(self) -> dict[str, object]:
        """What ``slatrack policy list`` and the report show of a version."""
        return {
            "contract": self.contract,
            "effective_from": _utc(self.effective_from),
            "policy_version": self.policy.version,
            "digest": self.policy.digest,
            "published_at": _utc(self.published_at),
            "retroactive": self.event.retroactive,
            "position": self.position,
        }


class ContractError(ValueError):
    """A policy event whose policy is not valid, or is not the one its digest names."""


def tagged(
    policy: Policy, contract: str, effective_from: datetime | None, requested: str | None = None
) -> Policy:
    """The policy as a version of ``contract`` in force from ``effective_from`` (a copy: the
    settings, their digest and built calendars are shared). ``requested``: the contract the
    customer is on, when it had no version in force and this (the default's) measures instead."""
    copy = policy.model_copy()
    copy._contract = contract
    copy._effective_from = effective_from
    copy._requested = requested
    return copy


def version_of(event: PolicyVersionPublished, position: int) -> PolicyVersion:
    """A policy event as a version: its TOML valid and its digest and version the ones it names
    (ContractError otherwise, saying which)."""
    where = f"policy event at position {position} ({event.contract} from {_utc(event.effective_from)})"
    try:
        policy = parse_policy(event.policy, where)
    except PolicyError as exc:
        raise ContractError(f"{where}: invalid policy: {'; '.join(exc.problems)}") from None
    if policy.digest != event.digest:
        raise ContractError(f"{where}: the policy's digest is {policy.digest}, the event says {event.digest}")
    if policy.version != event.policy_version:
        raise ContractError(
            f"{where}: the policy's version is {policy.version!r}, the event says {event.policy_version!r}"
        )
    effective = whole_second(event.effective_from)
    return PolicyVersion(
        event.contract, effective, tagged(policy, event.contract, effective), position, event
    )


def contract_at(account: Iterable[Recorded], at: datetime, known_by: datetime | None = None) -> str:
    """The contract a customer is on at ``at``, from its account events known by ``known_by``
    (occurred by then; default: all): the ``account.contract_changed`` effective latest at or
    before ``at`` (of two effective at the same instant, the one recorded later)."""
    best: tuple[datetime, int, str] | None = None
    for record in account:
        event = record.event
        if not isinstance(event, AccountContractChanged):
            continue
        if known_by is not None and record.at > known_by:
            continue
        effective = whole_second(event.data.effective_from)
        if effective <= at and (best is None or (effective, record.seq) > best[:2]):
            best = (effective, record.seq, event.data.contract)
    return best[2] if best is not None else DEFAULT_CONTRACT


def contract_changes(account: Iterable[Recorded]) -> list[datetime]:
    """The instants from which a customer's contract changes (its contract events' effective instants)."""
    return sorted(
        whole_second(r.event.data.effective_from)
        for r in account
        if isinstance(r.event, AccountContractChanged)
    )


class Contracts:
    """Every contract's versions, and the policy that measures a ticket.

    ``base``: the configured policy, the default contract's version from the beginning.
    ``override``: a what-if (``slatrack replay --policy``): this policy measures every ticket,
    whatever its contract (whose name the views still show).
    """

    def __init__(
        self, base: Policy, versions: Iterable[PolicyVersion] = (), *, override: Policy | None = None
    ):
        self.base = tagged(base, DEFAULT_CONTRACT, None)
        self.versions: tuple[PolicyVersion, ...] = tuple(sorted(versions, key=lambda v: v.position))
        self.override = override
        self._by_contract: dict[str, list[PolicyVersion]] = {}
        for version in self.versions:
            self._by_contract.setdefault(version.contract, []).append(version)
        self._tagged: dict[tuple[str, int, str | None], Policy] = {}
        self._digest: str | None = None
        self.fixed: Policy | None = None

    @classmethod
    def single(cls, policy: Policy) -> "Contracts":
        """This policy, as it is (tagged or not), for every ticket whatever its contract: a caller
        that has resolved the policy already, or code from before contracts."""
        contracts = cls(policy)
        contracts.fixed = policy
        return contracts

    def with_versions(self, versions: Iterable[PolicyVersion]) -> "Contracts":
        """These contracts with more versions (those read from the policy topic since)."""
        return Contracts(self.base, [*self.versions, *versions], override=self.override)

    @property
    def names(self) -> list[str]:
        return sorted({DEFAULT_CONTRACT, *self._by_contract})

    @property
    def position(self) -> int:
        """The position after the last version read (0: none)."""
        return self.versions[-1].position + 1 if self.versions else 0

    def in_force(self, contract: str, at: datetime) -> Policy | None:
        """The version of ``contract`` in force at ``at`` (None: it has none then)."""
        best: PolicyVersion | None = None
        for version in self._by_contract.get(contract, ()):
            if version.effective_from <= at and (
                best is None
                or (version.effective_from, version.position) > (best.effective_from, best.position)
            ):
                best = version
        if best is not None:
            return best.policy
        return self.base if contract == DEFAULT_CONTRACT else None

    def history_of(self, contract: str) -> list[PolicyVersion]:
        """A contract's versions, in the order they take effect."""
        return sorted(self._by_contract.get(contract, ()), key=lambda v: (v.effective_from, v.position))

    def policy_at(self, contract: str, at: datetime) -> Policy:
        """The policy measuring what ``contract`` covers at ``at`` (the default's if it has no version)."""
        if self.fixed is not None:
            return self.fixed
        policy = self.in_force(contract, at)
        requested: str | None = None
        if policy is None:
            policy, requested = self.in_force(DEFAULT_CONTRACT, at) or self.base, contract
        if self.override is not None:
            return self._tag(self.override, contract, -1, None)
        if requested is None:
            return policy
        return self._tag(policy, DEFAULT_CONTRACT, id(policy), requested)

    def customer_policy(self, account: Sequence[Recorded], at: datetime) -> Policy:
        """The policy of the contract a customer is on at ``at`` (its account standing's rules)."""
        return self.policy_at(contract_at(account, at, at), at)

    def policy_for(self, records: Iterable[Recorded], account: Sequence[Recorded], as_of: datetime) -> Policy:
        """The policy measuring a ticket as of ``as_of``: the version of its customer's contract in
        force at its dispatch, as known by ``as_of``. Not opened by then: the customer's now."""
        opened = opening(records, as_of)
        dispatch = opened.at if opened is not None else whole_second(as_of)
        return self.policy_at(contract_at(account, dispatch, as_of), dispatch)

    @property
    def digest(self) -> str:
        """``sha256:`` of every policy event used (canonical bytes and a newline each, in order),
        then the base's canonical settings: what changes if any version or the base does."""
        if self._digest is None:
            sha = hashlib.sha256()
            for version in self.versions:
                sha.update(encode_policy_event(version.event) + b"\n")
            sha.update(self.base.digest.encode())
            if self.override is not None:
                sha.update(b"override " + self.override.digest.encode())
            self._digest = "sha256:" + sha.hexdigest()
        return self._digest

    def _tag(self, policy: Policy, contract: str, token: int, requested: str | None) -> Policy:
        key = (contract, token, requested)
        found = self._tagged.get(key)
        if found is None:
            found = self._tagged[key] = tagged(policy, contract, policy.effective_from, requested)
        return found


def _utc(instant: datetime | None) -> str | None:
    return None if instant is None else whole_second(instant).strftime("%Y-%m-%dT%H:%M:%SZ")


PolicySource = Policy | Contracts  # one policy for everything (as before contracts), or contracts


def contracts_of(source: PolicySource) -> Contracts:
    """Contracts from either: a single policy is the default contract's only version."""
    return source if isinstance(source, Contracts) else _single(source)


_SINGLES: dict[int, tuple[Policy, Contracts]] = {}


def _single(policy: Policy) -> Contracts:
    # The same policy object gives the same Contracts (and its tagged copies) every time: a
    # worker's fold asks once per ticket. Bounded: policies are few (a process loads a handful).
    found = _SINGLES.get(id(policy))
    if found is None or found[0] is not policy:
        if len(_SINGLES) > 64:
            _SINGLES.clear()
        found = _SINGLES[id(policy)] = (policy, Contracts.single(policy))
    return found[1]
