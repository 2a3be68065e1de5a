"""Replay: any operation applied at some height, replayed at any later height (anywhere in that
height's batch), changes nothing — the per-author sequence numbers in the Primary refuse it, with no
window of remembered ids to outgrow (mycelium.ledger.operations, DESIGN "Replay")."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.identity import Genesis, NodeKey, make_invite
from mycelium.ledger.operations import (
    SEQ,
    alive_operation,
    apply_batch,
    clock_operation,
    deploy_operation,
    join_operation,
    last_sequence,
    profile_operation,
    sign_operation,
    OpType,
    undeploy_operation,
)
from mycelium.roles.profile import GIB
from mycelium.spores.primary import genesis_primary
from tests.profiles import make_profile

T0 = 1_800_000_000
FOUNDER = NodeKey.from_seed(b"\x07" * 32)
OTHERS = sorted((NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)), key=lambda k: k.node_id)
KINDS = ("alive", "profile", "deploy", "undeploy", "leave", "join")


def _profile():
    return make_profile(cores=4, ram_total_bytes=8 * GIB, ram_available_bytes=4 * GIB, load_1m_milli=100)


def _spec(name: str, version: int) -> dict:
    """A real deployable spec (examples/static-web.yaml) renamed, with `version` in an env var."""
    from pathlib import Path

    from mycelium.runtime.manifest import load_deployable

    spec = load_deployable(Path(__file__).resolve().parents[2] / "examples" / "static-web.yaml").to_wire()
    return _with_version({**spec, "name": name}, version)


def _with_version(spec: dict, version: int) -> dict:
    env = dict(spec.get("env") or {})
    env["VERSION"] = str(version)
    return {**spec, "env": env}


def _version(spec: dict) -> str:
    return (spec.get("env") or {}).get("VERSION")


def _founded():
    genesis = Genesis(name="replay", founder=FOUNDER.node_id, created_s=T0,
                      params={"admins": [FOUNDER.node_id], "dead_after_s": 3600})
    p = genesis_primary(genesis)
    return apply_batch(p, [clock_operation(FOUNDER, p.network_id, now_s=T0).to_wire(),
                           profile_operation(FOUNDER, p.network_id, _profile(), "sclerotium", now_s=T0).to_wire()])


def _op(kind: str, who: int, p, t: int, step: int):
    """An operation of `kind` by key `who` (0 = founder) that is applicable on top of `p`, or None."""
    key = FOUNDER if who == 0 else OTHERS[who - 1]
    member = key.node_id in p.members
    net = p.network_id
    if kind == "join" and not member:
        invite = make_invite(FOUNDER, net, ttl_s=3600, uses=1, now_s=t)
        return join_operation(key, net, invite, _profile(), "rhizomorph", now_s=t)
    if not member:
        return None
    if kind == "alive":
        return alive_operation(key, net, now_s=t)
    if kind == "profile":
        return profile_operation(key, net, _profile(), "rhizomorph", now_s=t, labels={"step": str(step)})
    if kind == "leave" and who != 0:
        return sign_operation(key, net, OpType.LEAVE, {}, now_s=t)
    if kind == "deploy" and who == 0:
        return deploy_operation(key, net, _spec("svc", step), now_s=t)
    if kind == "undeploy" and who == 0 and "svc" in p.services:
        return undeploy_operation(key, net, "svc", now_s=t)
    return None


heights_strategy = st.lists(
    st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, len(OTHERS))), min_size=0, max_size=5),
    min_size=1, max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heights=heights_strategy, pick=st.integers(0, 10_000), later=st.integers(0, 10_000),
       position=st.integers(0, 10))
def test_any_applied_operation_replayed_at_any_later_height_is_refused(heights, pick, later, position):
    chain = [_founded()]
    batches: list[list[dict]] = []
    applied: list[tuple[int, dict]] = []  # (height index it was applied at, wire)
    for i, choices in enumerate(heights):
        p, t = chain[-1], T0 + 10 * (i + 1)
        batch = [clock_operation(FOUNDER, p.network_id, now_s=t, seq=last_sequence(p.params, FOUNDER.node_id) + 1)]
        for step, (kind, who) in enumerate(choices):
            op = _op(kind, who, p, t, 10 * i + step)
            if op is not None:
                batch.append(op)
        wires = [op.to_wire() for op in batch]
        nxt = apply_batch(p, wires)
        for op in batch:
            if last_sequence(nxt.params, op.author) == op.seq:
                applied.append((i, op.to_wire()))
        batches.append(wires)
        chain.append(nxt)
    assert applied  # at least the clock ops
    at, replay = applied[pick % len(applied)]
    # a later height: one of those that followed in the chain, or a new one on top of the head
    target = at + 1 + later % (len(batches) - at)
    prev = chain[target]
    batch = batches[target] if target < len(batches) else []
    spot = position % (len(batch) + 1)
    with_replay = batch[:spot] + [replay] + batch[spot:]
    assert apply_batch(prev, with_replay).hash() == apply_batch(prev, batch).hash()


def test_an_admins_old_deploy_replayed_after_thousands_of_operations_is_refused():
    """The old guard remembered the last 4,096 operation ids: after that many alive operations an
    admin's old deploy could be replayed to roll a service back. Sequence numbers have no window."""
    p = _founded()
    net = p.network_id
    old = deploy_operation(FOUNDER, net, _spec("svc", 1), now_s=T0 + 1)
    new = deploy_operation(FOUNDER, net, _spec("svc", 2), now_s=T0 + 2)
    p = apply_batch(p, [old.to_wire(), new.to_wire()])
    assert _version(p.services["svc"]) == "2"
    invite = make_invite(FOUNDER, net, ttl_s=3600, uses=1, now_s=T0)
    p = apply_batch(p, [join_operation(OTHERS[0], net, invite, _profile(), "rhizomorph", now_s=T0 + 3).to_wire()])
    for h in range(20):  # 20 heights × 250 alive operations = 5,000 operations since the deploy
        p = apply_batch(p, [alive_operation(OTHERS[0], net, now_s=T0 + 10 + h).to_wire() for _ in range(250)])
    assert len(p.params[SEQ]) == 2  # one sequence per author, not one id per operation
    p = apply_batch(p, [old.to_wire()])
    assert _version(p.services["svc"]) == "2"
