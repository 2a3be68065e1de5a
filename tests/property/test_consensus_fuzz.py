"""Any message in any state: the consensus core handles it or rejects it into a counted reason.

States come from a seeded 4-validator network run for a random time; inputs are garbage, mutated
real messages (re-signed or not), and well-signed messages with hostile fields.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.shell.effects import Broadcast
from mycelium.encoding import canonical
from mycelium.consensus.core import REJECTIONS, Step
from mycelium.testing.localnet import LocalNet, localnet_key
from mycelium.consensus.messages import (
    NIL, Commitment, MessageError, Precommit, Proposal, Reveal, parse_message, sign,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), inner, max_size=5),
    max_leaves=12,
)
field_values = st.one_of(
    st.integers(-3, 12), st.just(2**40), st.binary(min_size=32, max_size=32), st.just(NIL), st.binary(max_size=70),
    st.text(max_size=8), st.none(), st.lists(st.text(max_size=3), max_size=3),
)


@st.composite
def hostile(draw, net: LocalNet):
    """A message aimed at a core of `net` in its current state."""
    core = net.cores[0]
    kind = draw(st.sampled_from(["garbage", "bytes", "mutated", "signed", "outsider"]))
    if kind == "garbage":
        return draw(plain)
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    if kind == "outsider" or kind == "signed":
        key = localnet_key(999, 0) if kind == "outsider" else draw(st.sampled_from(net.keys))
        h = core.height + draw(st.sampled_from([-1, 0, 0, 0, 1, 3]))
        r = draw(st.sampled_from([0, core.round, core.round + 1, core.round + 2, 10**6]))
        value = draw(st.sampled_from([NIL, draw(st.binary(min_size=32, max_size=32)), core.prev_hash]))
        message = draw(st.sampled_from([
            Commitment(max(h, 0), r, value or b"\1" * 32, key.node_id),
            Reveal(max(h, 0), r, value, b"\2" * 32, key.node_id),
            Precommit(max(h, 0), r, value, key.node_id),
            Proposal(max(h, 0), r, tuple(draw(st.lists(st.text(max_size=70), max_size=3))), core.prev_hash,
                     draw(st.integers(-1, max(r - 1, -1))), key.node_id),
        ]))
        return sign(message, key, net.network_id).to_wire()
    sent = [m for m in net.sent if isinstance(m, dict)]
    base = dict(draw(st.sampled_from(sent))) if sent else {"v": 1, "t": 2}
    for _ in range(draw(st.integers(1, 3))):
        base[draw(st.sampled_from(sorted(base) + ["extra"]))] = draw(field_values)
    return base


class Recorder(LocalNet):
    """A LocalNet that also keeps every message put on the wire, as material for mutations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []
        self.world.tap = lambda src, dst, message: self.sent.append(message)


@SETTINGS
@given(seed=st.integers(0, 3), until=st.floats(0.0, 5.0), data=st.data())
def test_any_message_in_any_state_is_handled_or_counted(seed, until, data):
    net = Recorder(4, seed=seed)
    net.run(until)
    core = net.cores[0]
    for _ in range(data.draw(st.integers(1, 6))):
        message = data.draw(hostile(net))
        before = sum(core.errors.values())
        try:
            parse_message(message)
            parsed = True
        except MessageError:
            parsed = False
        effects = core.on_message(net.ids[1], message, net.now)  # must not raise
        assert isinstance(effects, list)
        assert set(core.errors) <= set(REJECTIONS), f"undeclared rejection reasons: {set(core.errors) - set(REJECTIONS)}"
        if not parsed:
            assert sum(core.errors.values()) == before + 1 and core.errors["malformed"] >= 1
        for e in effects:
            if isinstance(e, Broadcast):
                canonical(e.message)  # everything we send is encodable
    core.on_tick(net.now + 100.0)
    assert core.step in set(Step) and core.locked_round <= core.round
    # and the network still agrees and makes progress afterwards
    net.run(net.now + 4.0)
    values = {}
    for i in range(4):
        for h, d in net.decisions(i).items():
            assert values.setdefault(h, d.value) == d.value

