"""The self-upgrade core (issue 20): the signed release operation and the staged rollout, pure.

Publishing is admin-only, never a downgrade, never a split of the network; reports are per node;
the rollout (one canary, then rhizomorphs and hyphae, then validators one at a time) is a function
of the Primary, and a rolled-back node fails the release for everyone."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.identity import Genesis
from mycelium.ledger.operations import NotAuthorized, OperationError, OpType, apply_batch, check_operation, sign_operation
from mycelium.release import rules
from mycelium.release.rollout import plan
from mycelium.release.versions import PROTOCOLS, VersionError, incompatible, newer, parse_version, version_key
from mycelium.spores.primary import Member, genesis_primary
from mycelium.testing.spores import node_key

NOW = 1_700_000_000
KEYS = [node_key(30 + i) for i in range(8)]
A = KEYS[0]
SHA = "ab" * 32


def network(n: int = 4, validators: int = 4, *, report: bool = True):
    genesis = Genesis(name="rel", founder=A.node_id, created_s=NOW, params={"admins": [A.node_id], "dead_after_s": 60})
    p = genesis_primary(genesis)
    members = {k.node_id: Member("sclerotium" if i < validators else ("rhizomorph" if i % 2 else "hypha"), 500_000, {}, 0)
               for i, k in enumerate(KEYS[:n])}
    p = replace(p, members=members)
    if report:
        p = apply_batch(p, [op(k, rules.report_body("0.1.0", PROTOCOLS, "running")).to_wire() for k in KEYS[:n]])
    return p


def op(key, body):
    return sign_operation(key, genesis_net(), OpType.RELEASE, body, now_s=NOW)


_NET: list[str] = []


def genesis_net() -> str:
    if not _NET:
        _NET.append(Genesis(name="rel", founder=A.node_id, created_s=NOW,
                            params={"admins": [A.node_id], "dead_after_s": 60}).network_id)
    return _NET[0]


def publish(version="0.1.1", *, key=A, min_from="0.1.0", protocols=None, sha=SHA, size=1000, notes=""):
    return op(key, rules.publish_body(version, sha, size, min_from, notes, protocols or PROTOCOLS))


def refused(o, prev, match, kind=OperationError):
    with pytest.raises(kind, match=match):
        check_operation(o, prev, now_s=NOW)
    after = apply_batch(prev, [o.to_wire()])
    assert rules.state_of(after.params) == rules.state_of(prev.params)  # nothing changed


def test_admin_publishes_and_every_node_sees_the_target():
    p = apply_batch(network(), [publish(notes="faster joins").to_wire()])
    record = rules.state_of(p.params)["published"]["0.1.1"]
    assert record["sha256"] == SHA and record["author"] == A.node_id and record["notes"] == "faster joins"
    r = plan(p)
    assert r.target == "0.1.1" and r.network_version == "0.1.0" and r.failed is None
    assert r.nodes[r.canary].action == "upgrade"
    assert sum(x.action == "upgrade" for x in r.nodes.values()) == 1  # the canary alone


def test_bad_publishes_are_refused_with_a_reason_and_change_nothing():
    p = network()
    refused(publish(key=KEYS[1]), p, "not an admin of this network, so it cannot publish", NotAuthorized)
    refused(publish("0.1.0"), p, "not above 0.1.0.*downgrade")
    refused(publish("0.0.9"), p, "downgrade")
    p1 = apply_batch(p, [publish("0.2.0").to_wire()])
    refused(publish("0.2.0"), p1, "re-release")
    refused(publish("0.1.5"), p1, "not above 0.2.0")
    refused(publish("0.3.0", min_from="0.4.0"), p, "above itself")
    refused(publish("0.3.0-rc1"), p, "dotted whole numbers")
    refused(publish(sha="xyz"), p, "64 lowercase hex")
    refused(publish(size=0), p, "size must be")
    split = {**PROTOCOLS, "consensus": [2, 2]}
    refused(publish(protocols=split), p, "would split the network.*consensus versions 2..2 and 1..1 do not overlap")
    refused(publish(protocols={k: v for k, v in PROTOCOLS.items() if k != "channel"}), p, "channel is spoken by only one")
    forged = replace(publish(), signature=bytes(64))
    refused(forged, p, "invalid signature")
    check_operation(publish(protocols={**PROTOCOLS, "consensus": [1, 2]}), p, now_s=NOW)  # overlapping: fine


def test_reports_are_about_oneself_and_about_published_releases():
    p = network(report=False)
    outsider = node_key(99)
    refused(op(outsider, rules.report_body("0.1.0", PROTOCOLS, "running")), p, "not a member")
    refused(op(KEYS[1], rules.report_body("0.1.0", PROTOCOLS, "switching", "0.9.0")), p, "not a published release")
    refused(op(KEYS[1], rules.report_body("0.1.0", PROTOCOLS, "dancing")), p, "state must be one of")
    refused(op(KEYS[1], {"action": "report"}), p, "needs exactly")
    refused(op(KEYS[1], {"action": "yank"}), p, "publish or report")


def test_a_rolled_back_canary_fails_the_release_and_stops_the_rollout():
    p = apply_batch(network(), [publish().to_wire()])
    canary = plan(p).canary
    key = next(k for k in KEYS if k.node_id == canary)
    p = apply_batch(p, [op(key, rules.report_body("0.1.0", PROTOCOLS, "switching", "0.1.1")).to_wire()])
    assert plan(p).nodes[canary].action == "upgrade"
    p = apply_batch(p, [op(key, rules.report_body("0.1.0", PROTOCOLS, "rolled_back", "0.1.1",
                                                  "health check failed within 30 s")).to_wire()])
    r = plan(p)
    assert r.failed == f"{canary[:16]} rolled back: health check failed within 30 s"
    assert all(x.action == "held" and "failed" in x.reason for x in r.nodes.values())
    assert r.canary == canary  # still named: status shows who rolled back
    # the next release starts a new rollout
    p = apply_batch(p, [publish("0.1.2").to_wire()])
    assert plan(p).failed is None and plan(p).action_of(plan(p).canary) == "upgrade"


def test_held_back_reasons():
    p = network(5, 3)
    opted = KEYS[3]
    p = apply_batch(p, [op(opted, rules.report_body("0.1.0", PROTOCOLS, "opted_out")).to_wire(),
                        publish("0.2.0", min_from="0.1.0").to_wire()])
    r = plan(p)
    assert r.nodes[opted.node_id].action == "held" and "auto_upgrade = false" in r.nodes[opted.node_id].reason
    p2 = apply_batch(network(5, 3), [publish("0.2.0", min_from="0.1.5").to_wire()])
    assert all("below 0.1.5" in x.reason for x in plan(p2).nodes.values())
    p3 = apply_batch(network(3, 3, report=False), [publish("0.2.0").to_wire()])
    assert all("has not reported" in x.reason for x in plan(p3).nodes.values())


def test_published_releases_are_bounded():
    p = network(2, 2)
    for minor in range(rules.MAX_RELEASES + 3):
        p = apply_batch(p, [publish(f"1.{minor}.0").to_wire()])
    published = rules.state_of(p.params)["published"]
    assert len(published) == rules.MAX_RELEASES
    assert min(published, key=version_key) == "1.3.0" and plan(p).target == f"1.{rules.MAX_RELEASES + 2}.0"


def test_the_release_state_is_bounded_per_release_and_per_member(monkeypatch):
    """Thinking in lifetimes: the Primary keeps at most MAX_RELEASES releases (and a failure reason
    only for a kept release) and one report per current member — reached here with a small bound."""
    monkeypatch.setattr(rules, "MAX_RELEASES", 2)
    p = network(3, 3)
    for minor in range(2, 7):  # every release fails: each leaves a reason, only the kept ones stay
        version = f"0.{minor}.0"
        p = apply_batch(p, [publish(version, min_from="0.1.0").to_wire()])
        p = apply_batch(p, [op(KEYS[1], rules.report_body("0.1.0", PROTOCOLS, "rolled_back", version, "x")).to_wire()])
        state = rules.state_of(p.params)
        assert len(state["published"]) <= 2 and set(state["failed"]) <= set(state["published"])
    assert sorted(rules.state_of(p.params)["failed"]) == ["0.5.0", "0.6.0"]
    assert len(rules.state_of(p.params)["nodes"]) == 3
    gone = KEYS[2].node_id  # a member leaves: its report goes with it at the next release operation
    p = replace(p, members={n: m for n, m in p.members.items() if n != gone})
    p = apply_batch(p, [op(KEYS[1], rules.report_body("0.1.0", PROTOCOLS, "running")).to_wire()])
    assert gone not in rules.state_of(p.params)["nodes"] and len(rules.state_of(p.params)["nodes"]) == 2


@settings(deadline=None)  # pure and fast; a 200 ms deadline fired beside the full unit suite at load 16
@given(st.lists(st.integers(0, 10**6 - 1), min_size=1, max_size=4), st.lists(st.integers(0, 10**6 - 1), min_size=1, max_size=4))
def test_versions_order_like_tuples(a, b):
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    pad = lambda xs: tuple(xs + [0] * (4 - len(xs)))  # noqa: E731
    assert newer(va, vb) == (pad(a) > pad(b))
    assert parse_version(va) == tuple(a)


@pytest.mark.parametrize("bad", ["", "1.", "01.2", "1.2.3.4.5", "v1", "1.2-rc", None, 3])
def test_bad_versions_say_why(bad):
    with pytest.raises(VersionError):
        parse_version(bad)


@settings(deadline=None)  # pure and fast; a 200 ms deadline fired beside the full unit suite at load 16
@given(st.dictionaries(st.sampled_from("abc"), st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1),
       st.dictionaries(st.sampled_from("abc"), st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1))
def test_compatibility_is_symmetric_and_means_overlap(a, b):
    a = {k: sorted(v) for k, v in a.items()}
    b = {k: sorted(v) for k, v in b.items()}
    assert bool(incompatible(a, b)) == bool(incompatible(b, a))
    overlap = set(a) == set(b) and all(max(a[k][0], b[k][0]) <= min(a[k][1], b[k][1]) for k in a)
    assert (not incompatible(a, b)) == overlap


def test_protocol_table_matches_the_modules():
    from mycelium.api.protocol import API_VERSION
    from mycelium.consensus.messages import WIRE_VERSION
    from mycelium.mesh.channel_wire import OPEN_VERSION
    from mycelium.mesh.membership import HANDSHAKE_VERSION
    from mycelium.runtime.spec import WIRE_VERSION as SPEC_VERSION
    from mycelium.spores.primary import PRIMARY_VERSION

    now = {"consensus": WIRE_VERSION, "primary": PRIMARY_VERSION, "handshake": HANDSHAKE_VERSION,
           "channel": OPEN_VERSION, "service_spec": SPEC_VERSION, "control_api": API_VERSION}
    assert {k: v[1] for k, v in PROTOCOLS.items()} == now


# ------------------------------------------------------------------------------ the rollout, simulated


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), validators=st.integers(1, 7), seed=st.randoms(use_true_random=False),
       fail_at=st.one_of(st.none(), st.integers(0, 8)))
def test_the_rollout_is_staged_and_safe(n, validators, seed, fail_at):
    """Nodes take their turn in any order the network allows; at every step: one canary before
    anyone else, non-validators before validators, never two validators switching at once; all
    succeed → everyone ends on the target; a rollback → the release fails and nobody else starts."""
    validators = min(validators, n)
    p = apply_batch(network(n, validators), [publish().to_wire()])
    keys = {k.node_id: k for k in KEYS[:n]}
    vset = set(p.validators())
    switched: list[str] = []
    for step in range(4 * n + 4):
        r = plan(p)
        assert r == plan(p)  # deterministic
        switching = [x for x, pl in r.nodes.items() if pl.state == "switching"]
        assert len([x for x in switching if x in vset]) <= 1, "two validators down at once"
        if r.failed:
            assert not [x for x, pl in r.nodes.items() if pl.action == "upgrade" and pl.state != "switching"]
            assert all(pl.action in ("done", "held") for x, pl in r.nodes.items() if x not in switching)
            return
        movers = [x for x, pl in r.nodes.items() if pl.action == "upgrade"]
        if not movers:
            break
        if not switched:
            assert movers == [r.canary]
        if any(x in vset for x in movers if x not in switching):
            assert all(r.nodes[x].action == "done" for x in keys if x not in vset)
        node = seed.choice(movers)
        key = keys[node]
        if r.nodes[node].state != "switching":
            p = apply_batch(p, [op(key, rules.report_body("0.1.0", PROTOCOLS, "switching", "0.1.1")).to_wire()])
        elif fail_at is not None and len(switched) == fail_at:
            p = apply_batch(p, [op(key, rules.report_body("0.1.0", PROTOCOLS, "rolled_back", "0.1.1", "x")).to_wire()])
        else:
            p = apply_batch(p, [op(key, rules.report_body("0.1.1", PROTOCOLS, "healthy", "0.1.1")).to_wire()])
            switched.append(node)
    r = plan(p)
    assert all(pl.action == "done" for pl in r.nodes.values()), r
    if len(vset) < n:  # a non-validator exists: the canary is one (the less risky node to try on)
        assert switched[0] not in vset
