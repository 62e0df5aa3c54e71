"""A worker's read-model generation, and the policy its rows are computed with.

Every row of a generation is computed with one policy: the one the generation was created with
(docs/sla-semantics.md). :meth:`Generations.open` finds the active generation (creates the
first one on a first start) and takes its policy; ``slatrack rebuild`` builds a generation and
switches to it, and the workers follow (:meth:`Generations.follow`); a log that ends before the
stored offsets was replaced, and the workers start a new generation from its beginning
(:meth:`Generations.log_ended_before`). Where each partition stands in the generation is
services.worker.tracking's.
"""

import asyncio
import logging

from projections.contracts import Contracts
from projections.policy import Policy, parse_policy
from services import metrics
from services.worker.histories import stored_versions
from services.worker.ports import GenerationStore, ReadModelStore

log = logging.getLogger(__name__)


class Generations:
    """The generation a projector writes and its policy."""

    def __init__(
        self,
        store: ReadModelStore,
        policy: Policy,
        *,
        generation: int | None = None,
        count_metrics: bool = True,
    ):
        self.store = store
        # The policy configured; the generation's own is the one used (see open).
        self.configured = policy
        self.policy = policy
        # The generation's policy as the default contract's base, and the versions it has read.
        self.contracts = Contracts(policy)
        self.generation = generation
        # Whether this process installs the policy's SLA metrics (a rebuild counts nothing).
        self.count_metrics = count_metrics

    async def open(self) -> int:
        """Migrate the store, find (or create) the active generation, and take its policy."""
        await asyncio.to_thread(self.store.migrate)
        if self.generation is None:
            self.generation = await asyncio.to_thread(self.store.active_generation)
            if self.generation is None:
                self.generation = await asyncio.to_thread(
                    self.store.create_generation, "first start", policy_text(self.configured)
                )
                await asyncio.to_thread(self.store.activate_generation, self.generation)
                log.info("created read-model generation %d", self.generation)
        await self.take_policy()
        return self.generation

    async def take_policy(self) -> None:
        """Every row of a generation is computed with one policy: the one it was created with.

        A worker configured with another one follows the generation's and says
        so; ``slatrack rebuild`` builds a generation with a new policy and
        switches to it, and the workers follow the switch (docs/sla-semantics.md).
        """
        gen = self.current
        text = await asyncio.to_thread(self.store.generation_policy, gen)
        if text is None:  # created before generations recorded their policy: bind ours
            text = await asyncio.to_thread(self.store.bind_policy, gen, policy_text(self.configured))
        policy = self.configured if text == self.configured.text else parse_policy(text, f"generation {gen}")
        if policy.digest != self.configured.digest:
            log.warning(
                "read-model generation %d is computed with policy %s (%s); the configured policy %s (%s) "
                "is not used: a generation keeps its policy, and `slatrack rebuild` builds one with the "
                "configured policy",
                gen,
                policy.version,
                policy.digest,
                self.configured.version,
                self.configured.digest,
            )
        self.policy = policy
        self.contracts = Contracts(policy, await asyncio.to_thread(stored_versions, self.store, gen))
        if self.count_metrics:
            metrics.SLA_ELAPSED.install(policy)

    async def follow(self) -> int:
        """The active generation now (a rebuild switched): written from now on, with its policy."""
        self.generation = await asyncio.to_thread(self.store.active_generation)
        await self.take_policy()
        log.warning(
            "the active read-model generation is now %s; continuing from its offsets", self.generation
        )
        return self.current

    async def log_ended_before(self, partitions: dict[int, tuple[int, int]]) -> int:
        """Stored offsets beyond the end of the log (partition -> (stored, end)): the log was
        replaced. A new generation (with the same policy), active at once, for the log as it is
        now; the old one is kept for a look back, older ones are dropped."""
        log.error(
            "THE LOG ENDS BEFORE THE STORED OFFSETS of generation %s (partition: (stored, end) %s). "
            "The broker's log was replaced or emptied (an embedded broker restarts empty). "
            "Starting a new read-model generation from the beginning of this log; the old one is kept.",
            self.generation,
            partitions,
        )
        generation = await asyncio.to_thread(
            self.store.create_generation,
            f"log ended before stored offsets {partitions}",
            policy_text(self.policy),
        )
        await asyncio.to_thread(self.store.activate_generation, generation)
        await asyncio.to_thread(keep_only, self.store, {generation, self.generation})
        self.generation = generation
        return generation

    @property
    def current(self) -> int:
        """The generation written (RuntimeError before :meth:`open`)."""
        if self.generation is None:
            raise RuntimeError("the projector is not open")
        return self.generation


def policy_text(policy: Policy) -> str:
    """The TOML text a generation records as its policy."""
    if policy.text is None:
        raise ValueError(f"policy {policy.version} has no TOML text (build it with parse_policy)")
    return policy.text


def keep_only(store: GenerationStore, generations: set[int | None]) -> None:
    """Drop every generation but these (the active one and the one before it, for a look back)."""
    for old in store.generations():
        if old["generation"] not in generations and not old["active"]:
            store.drop_generation(old["generation"])
