"""Properties of trust in the Primary: apply_batch with participation is deterministic, and whatever
a proposer reports, an honest validator's trust never falls once honest acceptors' objections hold."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.ledger.operations import apply_batch, clock_operation
from mycelium.ledger.trust_rules import contradicted_by, participation_operation
from tests.unit.test_ledger_trust import T0, certificate, network

KEYS, START = network(4)
HONEST = KEYS[1]

heights = st.lists(st.tuples(st.integers(0, 3),  # proposer
                             st.lists(st.booleans(), min_size=4, max_size=4),  # who is in the certificate
                             st.lists(st.booleans(), min_size=4, max_size=4)),  # whom it calls withheld
                   min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heights)
def test_participation_is_deterministic_and_never_cuts_an_honest_validator(steps):
    p = START
    for t, (proposer, signed, withheld) in enumerate(steps, start=1):
        signers = [k for k, s in zip(KEYS, signed) if s]
        claimed = [k.node_id for k, w, s in zip(KEYS, withheld, signed) if w and not s]
        report = participation_operation(KEYS[proposer], p.network_id, certificate(p, signers), claimed,
                                         now_s=T0 + t, seq=10 * t + 1)
        if contradicted_by(report, frozenset({HONEST.node_id})):
            continue  # honest acceptors saw HONEST reveal: that batch is refused, never applied
        batch = [clock_operation(KEYS[proposer], p.network_id, now_s=T0 + t, seq=10 * t).to_wire(), report.to_wire()]
        nxt = apply_batch(p, batch)
        assert nxt.to_bytes() == apply_batch(p, list(batch)).to_bytes()
        assert nxt.members[HONEST.node_id].trust_ppm >= p.members[HONEST.node_id].trust_ppm
        assert all(0 <= m.trust_ppm <= 1_000_000 for m in nxt.members.values())
        if HONEST in signers:
            assert nxt.members[HONEST.node_id].trust_ppm > p.members[HONEST.node_id].trust_ppm
        p = nxt
