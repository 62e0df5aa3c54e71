"""Reading the policy topic's records as versions (services.worker.batches.PolicyDecoder), the
same for the topic (services.kafka.policies) and an export's policy lines: a record that is no
version is rejected with why and never stops the reading; a second copy of an event id is a
duplicate (skipped) or, with another body, rejected."""

import orjson

from services.worker.batches import PolicyDecoder, PolicyLog, PolicyRead
from tests.samples import policy_sample, policy_text
from tests.worker_helpers import MemoryPolicyLog


def raw(**fields) -> bytes:
    return orjson.dumps(policy_sample(**fields))


async def test_versions_and_why_the_others_are_none():
    wrong_digest = raw(event_id="pol-3", digest="sha256:" + "0" * 64)
    log: PolicyLog = MemoryPolicyLog(
        [
            raw(event_id="pol-1"),
            b"{not json",
            wrong_digest,
            None,
            raw(event_id="pol-5", contract="gold", text=policy_text("gold-1")),
            raw(event_id="pol-6", text='version = "x"\nsurprise = 1\n'),
        ]
    )
    read = await log.read(0)
    assert [(v.position, v.contract, v.policy.version) for v in read.versions] == [
        (0, "default", "amended-2026.2"),
        (4, "gold", "gold-1"),
    ]
    reasons = dict(read.rejected)
    assert sorted(reasons) == [1, 2, 3, 5]
    assert reasons[1].startswith("invalid_json: ")
    assert reasons[2].startswith(
        "invalid_policy: policy event at position 2 (default from 2026-11-01T00:00:00Z)"
    )
    assert "the event says sha256:000" in reasons[2]
    assert reasons[3].startswith("empty: ")
    assert reasons[5].startswith("invalid_policy: ") and "surprise: unknown key" in reasons[5]
    assert read.end == 6 and read.duplicates == []
    version = read.versions[1]
    assert version.policy.contract == "gold" and version.listing()["position"] == 4


async def test_a_second_copy_of_an_event_id_is_a_duplicate_or_a_conflict():
    first = raw(event_id="pol-1")
    log = MemoryPolicyLog([first, b" " + first, raw(event_id="pol-1", contract="gold")])
    read = await log.read(0)
    assert [v.position for v in read.versions] == [0]
    assert read.duplicates == [1]  # the same event (another spacing): skipped
    [(position, reason)] = read.rejected
    assert position == 2
    assert reason == (
        "duplicate_event_id_conflict: event_id 'pol-1' is at position 0 with another body; the first "
        "copy is the version"
    )
    # Read again from the start, or from further on: the same answers (first copies are remembered).
    again = await log.read(0)
    assert [v.position for v in again.versions] == [0] and again.duplicates == [1]
    later = await log.read(1)
    assert later.versions == [] and later.duplicates == [1] and [p for p, _ in later.rejected] == [2]


async def test_a_read_goes_from_its_start_to_the_end_as_of_the_read():
    log = MemoryPolicyLog()
    assert await log.read(0) == PolicyRead([], [], 0)
    log.append(raw(event_id="pol-1"))
    first = await log.read(0)
    assert [v.position for v in first.versions] == [0] and first.end == 1
    log.append(raw(event_id="pol-2", effective_from="2026-12-01T00:00:00Z"))
    second = await log.read(first.end)
    assert [v.position for v in second.versions] == [1] and second.end == 2
    assert log.reads == [0, 0, 1]


def test_an_invalid_first_copy_does_not_take_the_event_id():
    decoder = PolicyDecoder()
    bad = raw(event_id="pol-1", digest="sha256:" + "1" * 64)
    read = decoder.read([(0, bad), (1, raw(event_id="pol-1"))], 2)
    assert [v.position for v in read.versions] == [1] and [p for p, _ in read.rejected] == [0]
