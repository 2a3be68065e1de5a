"""The node's view of the Primary chain, and the consensus Application that extends it.

The chain lives in SQLite (`storage.db`); every certified Primary is committed (fsynced) there
before anything acts on it. As the Application (`consensus.application`), the ledger proposes the
operations waiting in its pool, checks proposed batches, executes them with the deterministic
`operations.apply_batch`, and appends the decided Primary with its certificate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from mycelium.config import HEARTBEAT_S
from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import NodeId, NodeKey
from mycelium.observability.logs import bind_identity, get_logger
from mycelium.ledger.operations import (
    MAX_BATCH,
    TIME,
    Operation,
    OperationError,
    apply_batch,
    check_operation,
    clock_operation,
    last_sequence,
    observe_sequence,
    role_reasons,
)
from mycelium.ledger.trust_rules import ParticipationWitness, contradicted_by, participation_operation
from mycelium.spores.certificate import QuorumCertificate
from mycelium.spores.chain import PrimaryChain
from mycelium.spores.primary import (
    ChainError,
    CertifiedPrimary,
    PrimaryError,
    PrimarySpore,
    certify_genesis,
    genesis_primary,
    verify_successor,
)
from mycelium.storage.db import StateDB, StoredPrimary
from mycelium.storage.network import NetworkMembership

log = get_logger("mycelium.ledger")

LOCK_META_PREFIX = "consensus.lock/"  # + network id: the consensus core's state, fsynced before each signed step
MAX_POOL = 4096  # operations waiting to be proposed; more are refused with a clear error
HISTORY_KEPT = 4096  # certified Primaries kept in the database (the head carries the full state)
EPOCH_META_PREFIX = "epoch_link:"  # meta key prefix: the first link of each epoch, kept forever


class LedgerError(Exception):
    """The ledger refuses a request; the message says why."""


class Ledger:
    def __init__(self, db: StateDB, membership: NetworkMembership, key: NodeKey, chain: PrimaryChain | None) -> None:
        self.db = db
        self.membership = membership
        self.key = key
        self.chain = chain  # None until this node has the network's genesis (a joiner catching up)
        self.pool: OrderedDict[bytes, Operation] = OrderedDict()
        self._candidates: dict[tuple[int, bytes], PrimarySpore] = {}
        self._committed: PrimarySpore | None = None  # decided but not yet stored (certificate on its way)
        self.heartbeat_s = HEARTBEAT_S  # a proposer with nothing to propose still advances the clock this often
        self.history_kept = HISTORY_KEPT  # links kept beyond the epoch links (tests make it small)
        if chain is not None:
            self._load_epoch_links(chain)
        self._reasons_cache: tuple[bytes, dict] | None = None
        self.witness = ParticipationWitness()  # who this node saw reveal / withhold (trust_rules)

    @classmethod
    def open(cls, db: StateDB, membership: NetworkMembership, key: NodeKey) -> Ledger:
        genesis = membership.genesis
        head = db.head_primary()
        chain = _resume_valid_prefix(db, genesis, head.height) if head is not None else None
        if chain is not None:
            return cls(db, membership, key, chain)
        if genesis.founder == key.node_id:
            primary = genesis_primary(genesis)
            link = CertifiedPrimary(primary, certify_genesis(primary, key))
            db.append_primary(_stored(link))
            log.info("founded the chain", height=0, hash=primary.hash().hex()[:16])
            ledger = cls(db, membership, key, PrimaryChain(genesis, link))
            ledger._persist_epoch_link(link)
            return ledger
        return cls(db, membership, key, None)

    # ------------------------------------------------------------------------------ reading
    @property
    def head(self) -> PrimarySpore | None:
        return self.chain.primary if self.chain else None

    @property
    def height(self) -> int:
        return self.chain.height if self.chain else 0

    @property
    def head_hash(self) -> bytes | None:
        return self.head.hash() if self.head else None

    def role_of(self, node: NodeId) -> str:
        head = self.head
        return (head.role_of(node) if head else None) or "none"

    def role_reason(self, node: NodeId) -> str:
        head = self.head
        if head is None:
            return "not admitted yet: waiting for the network's chain"
        if node not in head.members:
            return "not admitted yet: waiting for a validator to decide the join"
        if len(head.members) == 1:
            return "the only member of its network"
        key = head.hash()
        if self._reasons_cache is None or self._reasons_cache[0] != key:
            self._reasons_cache = (key, role_reasons(head))
        return "; ".join(self._reasons_cache[1].get(node, ()))

    def validators(self) -> list[NodeId]:
        return self.head.validators() if self.head else []

    def member_count(self) -> int:
        return len(self.head.members) if self.head else 0

    def is_member(self, node: NodeId) -> bool:
        return bool(self.head and node in self.head.members)

    def service_count(self) -> int:
        return len(self.head.services) if self.head else 0

    # ------------------------------------------------------------------------------ submitting
    def submit(self, op: Operation) -> None:
        """Queue an operation for the next height this node proposes (checked now, and again then)."""
        if self.head is None:
            raise LedgerError("this node has no Primary yet, so it cannot check operations; wait for catch-up")
        try:
            check_operation(op, self.head, now_s=int(time.time()))
        except OperationError as exc:
            raise LedgerError(str(exc)) from exc
        if len(self.pool) >= MAX_POOL:
            raise LedgerError(f"{MAX_POOL} operations are already waiting; try again when the network catches up")
        self.pool[op.id] = op

    # ------------------------------------------------------------------------------ Application
    def _app_head(self) -> PrimarySpore | None:
        """What consensus builds on: the committed Primary whose certificate is on its way, else the head.
        (The core moves to height+1 right after `commit`, before the Decided effect is carried out.)"""
        head = self.head
        if self._committed is not None and (head is None or self._committed.height > head.height):
            return self._committed
        return head

    def next_validators(self) -> list[NodeId]:
        """The validator set consensus is voting with now: that of the Primary committed on top of
        the head, whose certificate is on its way (else the head's)."""
        head = self._app_head()
        return head.validators() if head else []

    def validators_for(self, height: int) -> list[NodeId]:
        head = self._app_head()
        if head is None or height != head.height + 1:
            return []
        return head.validators()

    def make_batch(self, height: int) -> list[Any]:
        head = self._app_head()
        if head is None:
            return []
        now_s = int(time.time())
        batch = []
        # by sequence: an author's operations go in the order it signed them (a later one applied
        # first would make the earlier one a refused "replay")
        for op_id, op in sorted(self.pool.items(), key=lambda item: (item[1].seq, item[0])):
            try:
                check_operation(op, head, now_s=now_s)
            except OperationError:
                del self.pool[op_id]  # no longer applicable (already applied, expired, member gone)
                continue
            batch.append(op.to_wire())
            if len(batch) >= MAX_BATCH - 1:
                break
        # The proposer's clock goes first: always with operations, and on its own once a heartbeat
        # is due (an empty list makes the core wait for its heartbeat timer instead).
        heartbeat_s = head.params.get("heartbeat_s", self.heartbeat_s)  # `network set heartbeat_s=…` wins
        if batch or now_s - head.params.get(TIME, 0) >= heartbeat_s:
            clock = clock_operation(self.key, self.membership.network_id, now_s=max(now_s, head.params.get(TIME, 0)),
                                    seq=last_sequence(head.params, self.key.node_id) + 1)
            batch.insert(0, clock.to_wire())
            participation = self._participation(head, now_s)
            if participation is not None and len(batch) < MAX_BATCH:
                batch.insert(1, participation.to_wire())
        return batch

    def _participation(self, head: PrimarySpore, now_s: int) -> Operation | None:
        """The trust report for `head`'s height, if this node holds `head`'s certificate."""
        link = self.chain.get(head.height) if self.chain else None
        if link is None or link.primary.hash() != head.hash() or self.key.node_id not in head.validators():
            return None
        op = participation_operation(self.key, self.membership.network_id, link.certificate,
                                     self.witness.withheld(head.height), now_s=now_s,
                                     seq=last_sequence(head.params, self.key.node_id) + 2)
        try:
            check_operation(op, head, now_s=now_s)
        except OperationError:
            return None  # already credited, or a certificate outside the validator set (genesis)
        return op

    def validate_batch(self, height: int, batch: list[Any]) -> bool:
        head = self._app_head()
        if head is None or height != head.height + 1 or len(batch) > MAX_BATCH:
            return False
        now_s = int(time.time())
        try:
            for raw in batch:
                op = Operation.from_wire(raw)
                check_operation(op, head, now_s=now_s)
                if contradicted_by(op, self.witness.opened(head.height)):
                    return False  # it calls withheld a validator whose reveal this node saw
        except OperationError:
            return False
        return True

    def execute(self, height: int, batch: list[Any], prev_hash: bytes) -> bytes:
        head = self._app_head()
        if head is None or head.hash() != prev_hash:
            raise LedgerError(f"cannot execute height {height}: this node's head is not {prev_hash.hex()[:16]}")
        candidate = apply_batch(head, list(batch))
        value = candidate.hash()
        self._candidates[(height, value)] = candidate
        return value

    def commit(self, height: int, value: bytes, batch: list[Any]) -> None:
        """Remember the decided candidate; the Decided effect that follows carries its certificate."""
        candidate = self._candidates.get((height, value))
        if candidate is None:
            head = self._app_head()
            if head is None or head.height != height - 1:
                raise LedgerError(f"commit of height {height} does not follow this node's head")
            candidate = apply_batch(head, list(batch))
            if candidate.hash() != value:
                raise LedgerError(f"decided hash {value.hex()[:16]} is not what this node computes for height {height}")
            self._candidates[(height, value)] = candidate
        self._committed = candidate
        self._forget_applied(batch)

    def discard_unstored(self) -> None:
        """A new consensus core starts at height + 1: a decision the old one committed but that was
        never stored (its write failed: disk full) is decided again, not built upon."""
        if self._committed is not None and (self.head is None or self._committed.height > self.head.height):
            self._committed = None

    def _forget_applied(self, batch: list[Any]) -> None:
        for raw in batch:
            try:
                self.pool.pop(Operation.from_wire(raw).id, None)
            except OperationError:
                pass  # a malformed op can't have been applied; nothing to remove

    def store_decided(self, height: int, value: bytes, batch: list[Any], certificate: QuorumCertificate) -> PrimarySpore:
        """Append the decided Primary (fsynced) and drop the operations it applied from the pool."""
        candidate = self._candidates.pop((height, value), None)
        if candidate is None:
            head = self.head
            if head is None:
                raise LedgerError("decision before this node has any Primary")
            candidate = apply_batch(head, list(batch))
            if candidate.hash() != value:
                raise LedgerError(f"decided hash {value.hex()[:16]} is not what this node computes for height {height}")
        link = CertifiedPrimary(candidate, certificate)
        verify_successor(self.head, candidate, certificate)
        self.db.append_primary(_stored(link))
        self.chain.append(link)
        self._persist_epoch_link(link)
        observe_sequence(last_sequence(candidate.params, self.key.node_id))
        self._candidates = {k: v for k, v in self._candidates.items() if k[0] > height}
        self._forget_applied(batch)
        kept = candidate.params.get("history_kept", self.history_kept)  # `network set history_kept=…` wins
        self.chain.set_history(kept)  # memory and database keep the same window (peers are served from memory)
        if height % max(1, min(256, kept // 2)) == 0:
            self.db.prune_primaries(kept)  # epoch links stay (meta), see _persist_epoch_link
        bind_identity(epoch=candidate.height)
        return candidate

    def record_link(self, chain: PrimaryChain, link: CertifiedPrimary) -> None:
        """Persist (fsynced) a link the catch-up core verified and appended to `chain`: our own chain,
        or for a joiner the first one, built from the genesis Primary of the answer."""
        if self.chain is None:
            self.chain = chain
            self.chain.set_history(self.history_kept)
            self.db.reset_chain()
        elif chain is not self.chain:
            raise LedgerError("a catch-up link for a chain this ledger does not hold")
        self.db.append_primary(_stored(link))
        self._persist_epoch_link(link)
        self.chain.set_history(link.primary.params.get("history_kept", self.history_kept))
        observe_sequence(last_sequence(link.primary.params, self.key.node_id))

    def adopt_sync(self, progress: Any) -> int:
        """Start from a state-sync head (mycelium.spores.statesync, verified): the chain becomes that
        one certified Primary plus the epoch links; returns the new height (0 if not newer)."""
        head = progress.head
        if head is None or (self.chain is not None and head.primary.height <= self.chain.height):
            return 0
        for link in progress.epoch_links:
            self.db.set_meta(self._epoch_key(link.primary.epoch), link.to_bytes())
        self.db.restart_chain_at(_stored(head))  # fsynced before anything acts on the new head
        chain = PrimaryChain.resume(self.membership.genesis, [head])
        for link in progress.epoch_links:
            chain.note_epoch_link(link)
        chain.set_history(self.history_kept)
        self.chain, self._candidates, self._committed = chain, {}, None
        observe_sequence(last_sequence(head.primary.params, self.key.node_id))
        return head.primary.height

    def set_history_kept(self, links: int) -> None:
        self.history_kept = links
        if self.chain is not None:
            self.chain.set_history(links)

    def _epoch_key(self, epoch: int) -> str:
        return f"{EPOCH_META_PREFIX}{self.membership.network_id}:{epoch}"

    def _persist_epoch_link(self, link: CertifiedPrimary) -> None:
        """The first link of an epoch is kept forever (in meta, beyond the pruned window)."""
        if self.chain is not None and self.chain.epoch_links.get(link.primary.epoch) is link:
            self.db.set_meta(self._epoch_key(link.primary.epoch), link.to_bytes())

    def _load_epoch_links(self, chain: PrimaryChain) -> None:
        epoch = 0
        while (data := self.db.get_meta(self._epoch_key(epoch))) is not None:
            try:
                chain.note_epoch_link(CertifiedPrimary.from_bytes(data))
            except PrimaryError as exc:
                log.error("stored epoch link is corrupt; state sync from this node stops at it", epoch=epoch,
                          error=str(exc))
                break
            epoch += 1

    # ------------------------------------------------------------------------------ consensus lock
    @property
    def _lock_key(self) -> str:
        return LOCK_META_PREFIX + self.membership.network_id

    def persist_lock(self, state: dict) -> None:
        self.db.set_meta(self._lock_key, canonical(state))

    def load_lock(self) -> dict | None:
        raw = self.db.get_meta(self._lock_key)
        if raw is None:
            return None
        try:
            state = decode(raw)
        except EncodingError:
            log.error("consensus lock state is unreadable; refusing to guess", key=self._lock_key)
            raise
        return state if isinstance(state, dict) else None


class ConsensusApp:
    """Adapter: the consensus core's Application protocol over a Ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def validators(self, height: int) -> list[NodeId]:
        return self.ledger.validators_for(height)

    def make_batch(self, height: int) -> list[Any]:
        return self.ledger.make_batch(height)

    def validate_batch(self, height: int, batch: list[Any]) -> bool:
        return self.ledger.validate_batch(height, batch)

    def execute(self, height: int, batch: list[Any], prev_hash: bytes) -> bytes:
        return self.ledger.execute(height, batch, prev_hash)

    def commit(self, height: int, value: bytes, batch: list[Any]) -> None:
        self.ledger.commit(height, value, batch)


def _stored(link: CertifiedPrimary) -> StoredPrimary:
    p = link.primary
    return StoredPrimary(p.height, p.hash(), p.prev_hash, p.to_bytes(), canonical(link.certificate.to_wire()))


def _load_link(stored: StoredPrimary) -> CertifiedPrimary:
    try:
        return CertifiedPrimary(PrimarySpore.from_bytes(stored.body), QuorumCertificate.from_wire(decode(stored.cert)))
    except (PrimaryError, EncodingError, ValueError) as exc:
        raise LedgerError(f"stored Primary {stored.height} is corrupt ({exc})") from exc


def _resume_valid_prefix(db: StateDB, genesis: Any, head_height: int) -> PrimaryChain | None:
    """The stored chain (newest HISTORY_KEPT links), re-verified link by link. A damaged link and
    everything after it are dropped and logged: certified links can always be fetched again from
    peers, so damage costs a catch-up, never a wrong state. None if not even the first link holds."""
    heights = []
    h = head_height
    while len(heights) < HISTORY_KEPT and db.primary_at(h) is not None:
        heights.append(h)
        h -= 1
    heights.reverse()
    chain: PrimaryChain | None = None
    for height in heights:
        try:
            link = _load_link(db.primary_at(height))
            if chain is None:
                chain = PrimaryChain.resume(genesis, [link])
            else:
                chain.append(link)
        except (LedgerError, ChainError, PrimaryError) as exc:
            dropped = db.truncate_primaries(height)
            log.error("stored Primary chain is damaged; dropped the damaged links, will re-fetch them from peers",
                      height=height, dropped=dropped, reason=str(exc))
            break
    return chain
