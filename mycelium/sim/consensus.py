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
from mycelium.sim.toy_ledger import LedgerApp
from mycelium.spores.certificate import CertificateError

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.messages import (
    Commitment, MessageError, MessageType, Precommit, Proposal, Reveal, parse_message, sign,
)
from mycelium.consensus.outcomes import Behind, Decided, Evidence, PersistLock, verify_evidence

NETWORK_ID = "sim-consensus"
LIVENESS_WINDOW_S = 30.0  # after the tail, every honest node has decided within this many virtual seconds
STATE_SYNC_DELAY_S = 0.5  # a Behind effect is answered this much later (the daemon's chain request)


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
        self.syncs: dict[str, int] = {"done": 0, "refused": 0, "nothing_new": 0}

    def outputs(self) -> dict[type, Any]:
        """The world's per-type handlers (carried out by the shell's one interpreter)."""
        return {PersistLock: self.on_lock, Decided: self.on_decided, Behind: self.on_behind, Evidence: self.on_evidence}

    def on_lock(self, world: Any, node: Any, effect: PersistLock) -> None:
        self.locks[node.id] = effect.state

    def on_decided(self, world: Any, node: Any, effect: Decided) -> None:
        self.chains[node.id][effect.height] = (effect.value, effect.batch)
        self.last_decided_at[node.id] = world.now
        try:
            effect.certificate.verify(NETWORK_ID, sorted(self.keys), expect_value=effect.value)
        except CertificateError as exc:
            self.problems.append(f"node {node.id} decided height {effect.height} on a bad certificate: {exc}")

    def on_behind(self, world: Any, node: Any, effect: Behind) -> None:
        index, peer = node.index, effect.peer
        world.schedule(world.now + STATE_SYNC_DELAY_S, lambda w: self.state_sync(w, index, peer))

    def on_evidence(self, world: Any, node: Any, effect: Evidence) -> None:
        accused = world.nodes[world.index[effect.validator]]
        if accused.honest or not verify_evidence(effect, NETWORK_ID):
            self.problems.append(f"node {node.id} produced evidence against honest {effect.validator}")

    def state_sync(self, world: Any, index: int, peer: NodeId) -> None:
        """What the daemon's chain catch-up does for a Behind node: take the peer's certified links
        above our head (every Decided certificate was verified when it was produced), provided the
        peer's chain holds our head, then rebuild the node's core at the new head."""
        node = world.nodes[index]
        if not node.up or peer not in self.chains:
            return
        mine, theirs = self.chains[node.id], self.chains[peer]
        head = max(mine, default=0)
        if head and theirs.get(head, (None,))[0] != mine[head][0]:
            self.syncs["refused"] += 1  # not our chain: never adopted
            return
        new = {h: link for h, link in theirs.items() if h > head}
        if not new:
            self.syncs["nothing_new"] += 1
            return
        mine.update(new)
        self.syncs["done"] += 1
        world.boot(index)  # the core restarts at the new head, as Session._start_consensus does


def boot_validator(key: NodeKey, network_id: str, app: LedgerApp, config: ConsensusConfig,
                   lock: dict | None) -> ConsensusCore:
    """A validator booted from its disk: the decided heights in `app` and its last PersistLock state
    (ignored when it is for a height the node has since seen decided, e.g. after a state sync)."""
    height, prev_hash = app.head()
    if lock is not None and lock.get("h") != height:
        lock = None
    return ConsensusCore.restore(key, network_id, app, config, height=height, prev_hash=prev_hash, state=lock)


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


def junk(key: NodeKey, message: Any, rng: Any, network_id: str = NETWORK_ID) -> Any:
    """One piece of consensus-shaped junk about `message`'s step: random bytes, a map with broken
    fields, a bad signature, a well-signed commitment a thousand rounds ahead, a reveal that opens
    nothing, or not a map at all."""
    try:
        m = parse_message(message)
    except MessageError:
        m = None
    h, r = getattr(m, "height", 0), getattr(m, "round", 0)
    me = key.node_id
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 1:
        return {"v": 1, "t": rng.randrange(0, 9), "h": h, "r": "x"}
    if kind == 2:
        return {"v": 1, "t": 4, "h": h, "r": r, "hash": b"\0" * 32, "from": me, "sig": b"\1" * 64}
    if kind == 3:
        return sign(Commitment(h, r + 1000, rng.randbytes(32), me), key, network_id).to_wire()
    if kind == 4:
        return sign(Reveal(h, r, rng.randbytes(32), rng.randbytes(32), me), key, network_id).to_wire()
    return [1, 2, 3] if kind == 5 else None


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
    equivocator signs a conflicting message for the same step, a copier re-signs another's vote, a
    garbage sender sends consensus-shaped junk."""
    return ByzantineHooks(
        mutate=lambda author, message, rng: forge(keys[author], message, rng, network_id),
        adopt=lambda author, own, observed, rng: adopt(keys[author], own, observed, rng, network_id),
        classify=classify,
        junk=lambda author, message, rng: junk(keys[author], message, rng, network_id),
    )


def scenario(params: ScenarioParams) -> Scenario:
    keys_list = [NodeKey.from_seed(params.rng.randbytes(32)) for _ in range(params.nodes)]
    keys = {k.node_id: k for k in keys_list}
    ids = sorted(keys)
    ledger = Ledger(keys)
    config = ConsensusConfig.local()

    def make_core(node_id: NodeId, persisted: Any) -> ConsensusCore:
        return boot_validator(keys[node_id], NETWORK_ID, LedgerApp({0: ids}, decided=dict(ledger.chains[node_id])),
                              config, ledger.locks.get(node_id))

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
        outputs=ledger.outputs(),
        report=lambda world: {f"state_sync_{k}": v for k, v in ledger.syncs.items()},
    )


class _Check:
    def __init__(self, name: str, kind: str, fn: Any) -> None:
        self.name, self.kind, self._fn = name, kind, fn

    def check(self, world: Any) -> str | None:
        return self._fn(world)

