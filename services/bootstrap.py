"""Wiring: what the settings make of slatrack's services, in one place."""

from projections.policy import Policy, default_policy, load_policy
from services.config import Settings


def configured_policy(settings: Settings) -> Policy:
    """The policy of ``SLATRACK_POLICY_FILE``, or the packaged one (the only place that default is taken)."""
    return load_policy(settings.policy_file) if settings.policy_file else default_policy()
