"""`slatrack explain TICKET` without --events: the history comes from the read-model store (SQLite)."""

import asyncio
from datetime import UTC, datetime

import orjson
from click.testing import CliRunner

from services.cli.commands import main
from services.config import Settings
from services.store import open_store
from tests.feed import Feed
from tests.unit.test_explain import AS_OF, everything, explained


def fill(data_dir) -> None:
    """Store the story's events as the projector does: one partition, offsets in recording order."""
    store = open_store(Settings(data_dir=data_dir, database_url=None))
    try:
        feed = asyncio.run(Feed(store, datetime(2026, 11, 13, 17, 0, tzinfo=UTC)).open())
        asyncio.run(feed.send(*everything().dicts))  # repeats are ignored
    finally:
        store.close()


def test_explain_from_the_store(tmp_path):
    fill(tmp_path)
    env = {"SLATRACK_DATA_DIR": str(tmp_path), "SLATRACK_DATABASE_URL": None, "SLATRACK_POLICY_FILE": None}
    runner = CliRunner()
    args = ["explain", "T-1", "--as-of", "2026-11-13T12:00:00-05:00", "--format", "json"]
    result = runner.invoke(main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout)
    expected = explained(everything().records, as_of=AS_OF)
    # The same events and policy as the file: the same digest, view and effects; only the
    # recording positions differ (offset x 1024 + partition), and the store kept one copy of e-6.
    assert document["digest"] == expected["digest"]
    assert document["view"] == expected["view"]
    strip = [{k: v for k, v in e.items() if k != "position"} for e in expected["entries"]]
    duplicate = strip.pop(9)
    assert duplicate["effects"][0]["effect"] == "ignored"
    assert [{k: v for k, v in e.items() if k != "position"} for e in document["entries"]] == strip
    assert document["entries"][1]["position"] == 2 * 1024  # e-3, offset 2

    table = runner.invoke(main, ["explain", "T-1"], env=env, catch_exceptions=False)  # as of now
    assert table.exit_code == 0 and table.stdout.startswith("ticket T-1   customer acme")

    unknown = runner.invoke(main, ["explain", "T-404"], env=env)
    assert unknown.exit_code == 1
    assert "unknown ticket 'T-404': no event of it in the read models" in unknown.stderr
