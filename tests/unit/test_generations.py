"""A worker's generation and its policy (services.worker.generations), against a SQLite store:
created on a first start, found afterwards, computed with its own policy whatever is configured,
followed after a switch, replaced when the log ended before its offsets."""

import logging

import pytest

from projections.policy import Policy, default_policy, parse_policy
from services.config import Settings
from services.store import open_store
from services.worker.generations import Generations, keep_only, policy_text
from tests.unit.test_tracking import dearer_text


@pytest.fixture
def store(tmp_path):
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path}/slatrack.db"))
    yield store
    store.close()


def dearer() -> Policy:
    return parse_policy(dearer_text(), "dearer.toml")


async def test_a_first_start_creates_the_active_generation_with_the_configured_policy(store):
    generations = Generations(store, default_policy(), count_metrics=False)
    generation = await generations.open()
    assert store.active_generation() == generation == generations.current
    assert store.generation_policy(generation) == policy_text(default_policy())
    again = Generations(store, dearer(), count_metrics=False)
    assert await again.open() == generation  # found, not created again
    assert len(store.generations()) == 1


async def test_a_generation_is_computed_with_its_own_policy_not_the_configured_one(store, caplog):
    caplog.set_level(logging.WARNING, logger="services.worker.generations")
    await Generations(store, default_policy(), count_metrics=False).open()
    configured = dearer()
    generations = Generations(store, configured, count_metrics=False)
    await generations.open()
    assert generations.policy.digest == default_policy().digest
    assert generations.configured is configured
    assert "the configured policy dearer" in caplog.text


async def test_a_generation_created_without_a_policy_is_bound_to_the_configured_one(store):
    unbound = store.create_generation("before migration 4")
    store.activate_generation(unbound)
    generations = Generations(store, dearer(), count_metrics=False)
    assert await generations.open() == unbound
    assert store.generation_policy(unbound) == dearer_text()
    assert generations.policy.digest == dearer().digest


async def test_a_given_generation_is_opened_as_it_is_even_if_not_active(store):
    live = await Generations(store, default_policy(), count_metrics=False).open()
    rebuilt = store.create_generation("rebuild", dearer_text())
    generations = Generations(store, dearer(), generation=rebuilt, count_metrics=False)
    assert await generations.open() == rebuilt
    assert store.active_generation() == live
    assert generations.policy.digest == dearer().digest


async def test_following_a_switch_takes_the_new_generation_and_its_policy(store):
    generations = Generations(store, default_policy(), count_metrics=False)
    await generations.open()
    rebuilt = store.create_generation("rebuild", dearer_text())
    store.activate_generation(rebuilt)
    assert await generations.follow() == rebuilt
    assert generations.policy.digest == dearer().digest


async def test_a_log_that_ended_before_gives_a_new_active_generation_keeping_the_previous_one(store):
    oldest = store.create_generation("oldest", dearer_text())
    generations = Generations(store, default_policy(), count_metrics=False)
    before = await generations.open()
    new = await generations.log_ended_before({0: (9, 0)})
    assert generations.current == new == store.active_generation() != before
    assert store.generation_policy(new) == policy_text(generations.policy)
    assert [g["generation"] for g in store.generations()] == [before, new]  # oldest dropped
    assert oldest not in {g["generation"] for g in store.generations()}


def test_keep_only_never_drops_the_active_generation(store):
    first, _second, third = (store.create_generation(f"g{i}", dearer_text()) for i in range(3))
    store.activate_generation(first)
    keep_only(store, {third, None})
    assert [g["generation"] for g in store.generations()] == [first, third]


def test_a_policy_without_its_toml_text_cannot_be_recorded():
    assert policy_text(default_policy()) == default_policy().text
    textless = Policy.model_validate(default_policy().model_dump())
    with pytest.raises(ValueError, match="no TOML text"):
        policy_text(textless)


async def test_the_generation_is_not_known_before_open(store):
    with pytest.raises(RuntimeError, match="not open"):
        Generations(store, default_policy()).current  # noqa: B018 - the property raises
