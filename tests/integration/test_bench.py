"""`make bench` cannot rot: bench/projector.py runs end to end at a tiny size (its own embedded
broker, a worker into SQLite with its stage breakdown, the rebuild, one and two workers on
PostgreSQL) and its JSON line has the keys the README's figures come from."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

BENCH = Path(__file__).parents[2] / "bench" / "projector.py"


def test_the_projector_bench_runs_end_to_end(postgres_dsn):
    sizes = ["--tickets", "200", "--customers", "50", "--batch", "200"]
    sizes += ["--import-tickets", "0", "--postgres-tickets", "200"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *sizes, "--postgres", postgres_dsn],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    first = ["raw_events_per_s", "projector_events_per_s", "ratio", "rebuild_seconds", "peak_rss_mb"]
    assert list(result)[:5] == first
    assert result["events"] > 0 and all(result[key] > 0 for key in first)
    assert result["peak_rss_mb"] == max(result["worker_peak_rss_mb"], result["rebuild_peak_rss_mb"])
    assert set(result["stage_us_per_event"]) == {"decode", "engine", "store", "other"}
    assert result["stage_us_per_event"]["engine"] > 0 and result["stage_us_per_event"]["store"] > 0
    assert result["postgres_one_worker_events_per_s"] > 0 and result["postgres_two_workers_events_per_s"] > 0
    assert result["postgres_scaling"] > 0
    assert "stages, one worker into SQLite (µs per event)" in done.stderr
