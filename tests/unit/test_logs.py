"""Repeated records of noisy libraries are rate-limited (issue 11, item 4: ~10,300 aiokafka
ERROR lines in 3 minutes while a broker was away)."""

import logging

from services.logs import RateLimited


def record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("x",), None)


def test_the_first_of_a_kind_passes_then_one_per_period_saying_how_many_were_left_out():
    now = [0.0]
    limit = RateLimited(every=30, clock=lambda: now[0])
    assert limit.filter(record("aiokafka.conn", "Unable connect to %s"))
    passed = 0
    for _ in range(100):  # ten a second for ten seconds
        now[0] += 0.1
        passed += limit.filter(record("aiokafka.conn", "Unable connect to %s"))
    assert passed == 0
    assert limit.filter(record("aiokafka", "Unable to update metadata from %s"))  # another kind
    now[0] = 31
    again = record("aiokafka.conn", "Unable connect to %s")
    assert limit.filter(again)
    assert "100 more like this in the last 30 s left out" in again.getMessage()


def test_our_own_records_are_never_held_back():
    limit = RateLimited(every=30, clock=lambda: 0.0)
    assert all(limit.filter(record("services.kafka.consumer", "PARTITION %s HALTED")) for _ in range(5))
