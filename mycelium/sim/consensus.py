"""Consensus as a mycelium.sim scenario: every simulated node is a validator running ConsensusCore.

    python -m mycelium.sim --protocol mycelium.sim.consensus:scenario --nodes 4 --seed 3

Durable state follows the shell's rule ("fsynced before the message that depends on it is sent"):
each node's last PersistLock and its decided heights are recorded from its effects as they come out,
and a restarted node is rebuilt from them. A *wiped* restart keeps them too: a validator that lost its
lock file but kept its signing key could sign twice, which is an operator error the daemon must refuse
(it is not a fault that consensus can tolerate), so the simulator does not model it.

Invariants: agreement (no two honest nodes decide different values at a height), certificates that
verify, evidence only against Byzantine nodes (safety); after the quiet tail, every honest node decides
again within a few heartbeats and all are within two heights of each other (liveness).
"""

from __future__ import annotations

from typing import Any

from mycelium.encoding import canonical, decode
from mycelium.identity import NodeId, NodeKey
from mycelium.sim.byzantine import ByzantineHooks
from mycelium.sim.invariants import LIVENESS, SAFETY
from mycelium.sim.protocols import Scenario, ScenarioParams
from mycelium.spores.certificate import CertificateError

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore
from mycelium.testing.localnet import GENESIS_HASH, LedgerApp
from mycelium.consensus.messages import (
    Commitment, MessageError, MessageType, Precommit, Proposal, Reveal, parse_message, sign,
)
from mycelium.consensus.outcomes import Decided, Evidence, PersistLock, verify_evidence

NETWORK_ID = "sim-consensus"
LIVENESS_WINDOW_S = 30.0  # after the tail, every honest node has decided within this many virtual seconds


class WireCodec:
    """Messages as canonical msgpack bytes, as the daemon sends them."""

    def encode(self, message: Any) -> bytes:
        return canonical(message)

    def decode(self, data: bytes) -> Any:
        return decode(data)  # EncodingError is a ValueError: the world drops and counts it


class Ledger:
    """What the scenario knows across the whole run (the nodes' disks and the invariants' memory)."""

    def __init__(self, keys: dict[NodeId, NodeKey]) -> None:
        self.keys = keys
        self.locks: dict[NodeId, dict] = {}
        self.chains: dict[NodeId, dict[int, tuple[bytes, tuple]]] = {n: {} for n in keys}
        self.last_decided_at: dict[NodeId, float] = {}
        self.problems: list[str] = []

    def on_output(self, world: Any, node: Any, effect: Any) -> None:
        if isinstance(effect, PersistLock):
            self.locks[node.id] = effect.state
        elif isinstance(effect, Decided):
            self.chains[node.id][effect.height] = (effect.value, effect.batch)
            self.last_decided_at[node.id] = world.now
            try:
                effect.certificate.verify(NETWORK_ID, sorted(self.keys), expect_value=effect.value)
            except CertificateError as exc:
                self.problems.append(f"node {node.id} decided height {effect.height} on a bad certificate: {exc}")
        elif isinstance(effect, Evidence):
            accused = world.nodes[world.index[effect.validator]]
            if accused.honest or not verify_evidence(effect, NETWORK_ID):
                self.problems.append(f"node {node.id} produced evidence against honest {effect.validator}")


def forge(key: NodeKey, message: Any, rng: Any, network_id: str = NETWORK_ID) -> Any:
    """A different, properly signed message for the same step: what an equivocator or liar sends."""
    try:
        m = parse_message(message)
    except MessageError:
        return message
    other = rng.randbytes(32)
    me = key.node_id
    if isinstance(m, Proposal):
        forged = Proposal(m.height, m.round, m.batch + (f"forged-{other.hex()[:8]}",), m.prev_hash, m.valid_round, me)
    elif isinstance(m, Commitment):
        forged = Commitment(m.height, m.round, other, me)
    elif isinstance(m, Reveal):
        forged = Reveal(m.height, m.round, other, m.nonce, me)
    elif isinstance(m, Precommit):
        forged = Precommit(m.height, m.round, other, me)
    else:
        return message
    return sign(forged, key, network_id).to_wire()


def adopt(key: NodeKey, own: Any, observed: Any, rng: Any, network_id: str = NETWORK_ID) -> Any:
    """A copier re-signs another validator's vote as its own (it cannot open such a commitment)."""
    try:
        m = parse_message(observed)
    except MessageError:
        return own
    if isinstance(m, (Commitment, Reveal, Precommit)):
        fields = {name: getattr(m, name) for name in m.__slots__ if name not in ("signature", "validator")}
        return sign(type(m)(**fields, validator=key.node_id), key, network_id).to_wire()
    return own


def classify(message: Any) -> str:
    if isinstance(message, bytes):
        try:
            message = decode(message)
        except ValueError:
            return "junk"
    t = message.get("t") if isinstance(message, dict) else None
    return MessageType(t).name if isinstance(t, int) and t in MessageType._value2member_map_ else "junk"


def consensus_hooks(keys: dict[NodeId, NodeKey], network_id: str) -> ByzantineHooks:
    """The generic Byzantine behaviours (mycelium.sim.byzantine) made consensus-aware: a liar or an
    equivocator signs a conflicting message for the same step, a copier re-signs another's vote."""
    return ByzantineHooks(
        mutate=lambda author, message, rng: forge(keys[author], message, rng, network_id),
        adopt=lambda author, own, observed, rng: adopt(keys[author], own, observed, rng, network_id),
        classify=classify,
    )


def scenario(params: ScenarioParams) -> Scenario:
    keys_list = [NodeKey.from_seed(params.rng.randbytes(32)) for _ in range(params.nodes)]
    keys = {k.node_id: k for k in keys_list}
    ids = sorted(keys)
    ledger = Ledger(keys)
    config = ConsensusConfig.local()

    def make_core(node_id: NodeId, persisted: Any) -> ConsensusCore:
        chain = ledger.chains[node_id]
        app = LedgerApp({0: ids}, decided=dict(chain))
        height = max(chain, default=0) + 1
        prev_hash = chain[height - 1][0] if height > 1 else GENESIS_HASH
        return ConsensusCore.restore(keys[node_id], NETWORK_ID, app, config, height=height, prev_hash=prev_hash,
                                     state=ledger.locks.get(node_id))

    def agreement(world: Any) -> str | None:
        if ledger.problems:
            return ledger.problems[0]
        seen: dict[int, tuple[bytes, NodeId]] = {}
        for node in world.nodes:
            if not node.honest:
                continue
            for height, (value, _) in ledger.chains[node.id].items():
                first = seen.setdefault(height, (value, node.id))
                if first[0] != value:
                    return f"height {height}: {first[1]} decided {first[0].hex()[:12]}, {node.id} {value.hex()[:12]}"
        return None

    def progress(world: Any) -> str | None:
        honest = world.honest_nodes()
        for node in honest:
            last = ledger.last_decided_at.get(node.id, -1.0)
            if world.now - last > LIVENESS_WINDOW_S:
                return f"node {node.id} has not decided since t={last:.3f}s"
        heights = [len(ledger.chains[n.id]) for n in honest]
        if heights and max(heights) - min(heights) > 2:
            return f"honest nodes are {max(heights) - min(heights)} heights apart"
        return None

    return Scenario(
        node_ids=ids,
        make_core=make_core,
        invariants=[_Check("agreement", SAFETY, agreement), _Check("progress", LIVENESS, progress)],
        hooks=consensus_hooks(keys, NETWORK_ID),
        codec=WireCodec(),
        on_output=ledger.on_output,
    )


class _Check:
    def __init__(self, name: str, kind: str, fn: Any) -> None:
        self.name, self.kind, self._fn = name, kind, fn

    def check(self, world: Any) -> str | None:
        return self._fn(world)

