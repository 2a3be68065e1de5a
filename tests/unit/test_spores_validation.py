"""Validation verdicts by reason, counting, and trust reports."""

import dataclasses

from mycelium.spores.entry import Entry, EntryType, service_scope
from mycelium.testing.spores import NETWORK_ID, node_id, node_key, signed_entry
from mycelium.spores.validation import (
    DropCounter,
    DropReason,
    EntryValidator,
    ValidationContext,
    parse_entry,
    validate,
)

NOW = 1_000_000


def ctx(**kw):
    return ValidationContext(NETWORK_ID, NOW, **kw)


def resigned(entry, **changes):
    """An entry changed and signed again by its author (so only the rule under test fails)."""
    changed = dataclasses.replace(entry, **changes)
    return changed.signed_by(node_key(_index(entry.author)), NETWORK_ID)


def _index(nid):
    return next(i for i in range(64) if node_id(i) == nid)


def test_valid_entry_is_accepted():
    assert validate(signed_entry(1, timestamp_ms=NOW), ctx()).ok


def test_bad_signature():
    e = dataclasses.replace(signed_entry(1), version=9)
    v = validate(e, ctx())
    assert v.reason is DropReason.BAD_SIGNATURE and "does not verify" in v.detail


def test_replay_into_another_network_fails():
    e = signed_entry(1)
    assert validate(e, ValidationContext("77" * 32, NOW)).reason is DropReason.BAD_SIGNATURE


def test_observer_must_be_the_author():
    e = resigned(signed_entry(1, EntryType.HEALTH, 500), observer=node_id(2))
    assert validate(e, ctx()).reason is DropReason.NOT_AUTHORISED


def test_self_types_must_be_about_the_author():
    e = resigned(signed_entry(1, EntryType.CAPABILITY, 1), subject=node_id(2))
    v = validate(e, ctx())
    assert v.reason is DropReason.NOT_AUTHORISED and "capability" in v.detail


def test_observations_may_be_about_others():
    assert validate(signed_entry(1, EntryType.HEALTH, 500, subject=2), ctx()).ok
    assert validate(signed_entry(1, EntryType.CONNECTION, 500, subject=3), ctx()).ok


def test_future_timestamp_beyond_tolerance():
    ok = signed_entry(1, EntryType.USAGE, NOW + 30_000)
    bad = signed_entry(1, EntryType.USAGE, NOW + 30_001)
    assert validate(ok, ctx()).ok
    assert validate(bad, ctx()).reason is DropReason.CLOCK_SKEW
    assert validate(bad, ctx(max_clock_skew_ms=60_000)).ok


def test_unknown_member_when_members_are_known():
    members = frozenset({node_id(1), node_id(2)})
    assert validate(signed_entry(1), ctx(members=members)).ok
    assert validate(signed_entry(3), ctx(members=members)).reason is DropReason.UNKNOWN_MEMBER
    about_stranger = signed_entry(1, EntryType.HEALTH, 100, subject=9)
    assert validate(about_stranger, ctx(members=members)).reason is DropReason.UNKNOWN_MEMBER


def test_wrong_scope():
    e = signed_entry(1, scope=service_scope("web"))
    assert validate(e, ctx(scope="network")).reason is DropReason.WRONG_SCOPE
    assert validate(e, ctx(scope=service_scope("web"))).ok


def test_contradiction_hook():
    e = signed_entry(1, body={"role": "sclerotium"})
    v = validate(e, ctx(contradiction=lambda en: "role differs" if en.body.get("role") else None))
    assert v.reason is DropReason.CONTRADICTS_PRIMARY and v.detail == "role differs"


def test_shape_problems_map_to_reasons():
    assert validate(dataclasses.replace(signed_entry(1), signature=b"x"), ctx()).reason is DropReason.MALFORMED
    big = dataclasses.replace(signed_entry(1), body={"x": "y" * 5000})
    assert validate(big, ctx()).reason is DropReason.OVERSIZE
    assert parse_entry({**signed_entry(1).to_wire(), "t": 50})[1].reason is DropReason.UNKNOWN_TYPE
    assert parse_entry(b"\xff\xff")[1].reason is DropReason.MALFORMED


class Recorder:
    def __init__(self):
        self.reports = []

    def report_invalid(self, sender, author, reason):
        self.reports.append((sender, author, reason))


def test_validator_counts_and_reports():
    rec = Recorder()
    v = EntryValidator(NETWORK_ID, reporter=rec)
    good = signed_entry(1, timestamp_ms=NOW)
    assert v.check(good.to_wire(), node_id(7), NOW) == good
    assert v.check(good, node_id(7), NOW) == good
    assert v.check(dataclasses.replace(good, version=2).to_wire(), node_id(7), NOW) is None
    assert v.check(b"garbage", node_id(8), NOW) is None
    assert v.drops.as_dict() == {"bad_signature": 1, "malformed": 1}
    assert rec.reports == [
        (node_id(7), node_id(1), DropReason.BAD_SIGNATURE),
        (node_id(8), None, DropReason.MALFORMED),
    ]


def test_drop_counter():
    c = DropCounter()
    c.count(DropReason.OVERSIZE)
    c.count(DropReason.OVERSIZE, 2)
    assert c[DropReason.OVERSIZE] == 3 and c.total == 3 and c.as_dict() == {"oversize": 3}


def test_entry_from_wire_rejects_non_map():
    assert parse_entry([1, 2])[1].reason is DropReason.MALFORMED
    assert isinstance(parse_entry(signed_entry(2).to_bytes())[0], Entry)
