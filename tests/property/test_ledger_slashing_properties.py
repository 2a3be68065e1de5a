"""Properties of slashing (issue 19): whatever the membership, the roles, the admins and which
validators a batch of evidence accuses (in any order), apply is deterministic; every accused member
is removed exactly as by `remove` — a rotation becomes due naming it, it keeps no admin right, no
envelope, and cannot rejoin — except that a batch never removes the last validator (that one stays,
at trust 0, with nothing rotating for it)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.identity import Genesis, make_invite
from mycelium.ledger import governance
from mycelium.ledger.operations import OperationError, apply_batch, check_operation, evidence_operation, join_operation
from mycelium.spores.primary import Member, genesis_primary
from mycelium.testing.spores import node_key
from tests.profiles import make_profile
from tests.unit.test_governance import _evidence_against

NOW = 1_700_000_000
KEYS = [node_key(10), node_key(11), node_key(12), node_key(13), node_key(14)]
GENESIS = Genesis(name="gov", founder=KEYS[0].node_id, created_s=NOW, params={"admins": [KEYS[0].node_id]})
NET = GENESIS.network_id

ROLES = st.sampled_from(["sclerotium", "rhizomorph", "hypha"])


@st.composite
def networks(draw):
    n = draw(st.integers(1, len(KEYS)))
    roles = draw(st.lists(ROLES, min_size=n, max_size=n))
    roles[draw(st.integers(0, n - 1))] = "sclerotium"  # a network always has a validator
    admins = sorted({KEYS[i].node_id for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))})
    p = genesis_primary(GENESIS)
    members = {KEYS[i].node_id: Member(roles[i], 500_000, {}, 0) for i in range(n)}
    accused = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    reporter = draw(st.integers(0, n - 1))
    network = replace(p, members=members, params={**p.params, "admins": admins})
    return network, [KEYS[i] for i in accused], KEYS[reporter]


def _model(p, accused, reporter):
    """Who the batch removes and who it keeps at trust 0, evidence by evidence (the rule, restated)."""
    roles = {n: m.role for n, m in p.members.items()}
    removed, kept = [], []
    for k in accused:
        if reporter.node_id not in roles:
            break  # the reporter itself was removed: its later operations are refused
        if any(r == "sclerotium" for n, r in roles.items() if n != k.node_id):
            del roles[k.node_id]
            removed.append(k.node_id)
        else:
            kept.append(k.node_id)
    return removed, kept


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_every_slashed_member_is_removed_and_rotated_out_but_never_the_last_validator(case):
    p, accused, reporter = case
    batch = [evidence_operation(reporter, NET, _evidence_against(k, height=5 + i, network_id=NET), now_s=NOW).to_wire()
             for i, k in enumerate(accused)]
    nxt = apply_batch(p, batch)
    assert nxt.to_bytes() == apply_batch(p, list(batch)).to_bytes()
    assert nxt.validators(), "slashing left the network without a validator"
    removed, kept = _model(p, accused, reporter)
    assert sorted(nxt.members) == sorted(set(p.members) - set(removed))
    assert [e["validator"] for e in nxt.evidence] == [k.node_id for k in accused][:len(removed) + len(kept)]
    for node in kept:
        assert nxt.members[node].trust_ppm == 0
    for node in removed:
        assert node not in nxt.params.get("admins", ())
        assert node not in governance.envelope_recipients(nxt)
        key = next(k for k in KEYS if k.node_id == node)
        inviter = next(iter(sorted(nxt.members)))
        invite = make_invite(next(k for k in KEYS if k.node_id == inviter), NET, ttl_s=3600, uses=1, now_s=NOW)
        rejoin = join_operation(key, NET, invite, make_profile(), "hypha", now_s=NOW + 1)
        try:
            check_operation(rejoin, nxt, now_s=NOW + 1)
        except OperationError as exc:
            assert "slashed" in str(exc), exc
        else:
            raise AssertionError("a slashed node rejoined")
    if removed:
        due = nxt.params[governance.REKEY_DUE]
        assert due["gen"] == governance.secret_generation(p) + 1 and due["removed"] == sorted(removed)
        assert governance.rekeyer(nxt) in nxt.validators()
    else:
        assert governance.REKEY_DUE not in nxt.params
