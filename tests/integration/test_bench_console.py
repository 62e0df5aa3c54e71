"""`make bench` cannot rot: bench/console.py runs end to end at a tiny size (templates projected for
real, copies written with commit_batch, the app on a socket, every page requested with the sign-in
cookie) and its JSON line has the keys the README's figures come from. No broker (nothing is
published) and no browser (httpx)."""

import subprocess
import sys
from pathlib import Path

import orjson

BENCH = Path(__file__).parents[2] / "bench" / "console.py"
PAGES = {"queue", "queue_filtered", "queue_customer", "customers", "customer", "ticket"}


def test_the_console_bench_runs_end_to_end():
    sizes = ["--tickets", "300", "--templates", "100", "--template-customers", "10", "--requests", "3"]
    done = subprocess.run([sys.executable, str(BENCH), *sizes], capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert list(result)[:2] == ["slowest_p95_ms", "under_300_ms"]
    assert result["copies"] == 3 and result["customers"] == 30
    # 100 simulated tickets, minus those the cut leaves out (opened after it), three times.
    assert 0 < result["tickets"] <= 300 and result["tickets"] % 3 == 0
    assert result["events"] > result["tickets"]
    assert set(result["pages"]) == PAGES | {"api_tickets", "api_report"}
    for name, page in result["pages"].items():
        assert sum(page["statuses"].values()) == 3, name
        assert page["median_ms"] > 0 and page["p95_ms"] >= page["median_ms"], name
    # The API's answers (the comparison rows) and the queue (built on the skeleton) answer 200.
    for name in ("api_tickets", "api_report", "queue"):
        assert result["pages"][name]["statuses"] == {"200": 3}, name
    assert set(result["phase_seconds"]) == {"templates", "copies", "requests"}
    assert "requests a page" in done.stderr
