"""Seed spores on the wire: sclerotia and rhizomorphs hand joiners a fast bootstrap (DESIGN "State sync").

    rpc "seed"   (empty request) → a SeedSpore (spores/seed.py) over the holder's certified head, listing
                 the members it is connected to, each with a CONNECTION observation carrying that
                 member's addresses; hyphae and non-members answer empty bytes.

A joiner (no chain yet, or not a member yet) asks one admitted peer at a time until it holds one valid
Seed. A Seed that does not decode, is for another network or whose signature does not verify is
dropped and counted (`session.rejected["seed_invalid"]`). From a valid one the listed members'
addresses become dial candidates (`transport.add_addresses`); a listed connection is adopted only once
this node reached that member itself (`adoptable`). The Seed's head is only a hint: the chain is still
verified by catch-up or state sync, and once the verified chain reaches the Seed's height a different
Primary there is counted (`rejected["seed_contradicted"]`) and the holder logged.
"""

from __future__ import annotations

import random
import time
from typing import Any

import trio

from mycelium.identity import NodeId
from mycelium.observability.logs import get_logger
from mycelium.spores.entry import Entry, EntryType
from mycelium.spores.primary import CertifiedPrimary
from mycelium.spores.seed import MAX_SEED_CONNECTIONS, SeedAdoption, SeedError, SeedSpore, adoptable, make_seed

log = get_logger("mycelium.seed")

RPC_SEED = "seed"
SEED_HOLDER_ROLES = frozenset({"sclerotium", "rhizomorph"})
MAX_SEED_ASKS = 16  # Seed requests a joiner makes before it relies on catch-up and Latent alone
MAX_ADDRESSES_PER_MEMBER = 16  # addresses listed (and taken) per member, as the mesh keeps
SEED_TIMEOUT_S = 10.0
MAX_ADOPTION_ROUNDS = 600  # looks (one per peers interval) at what of a Seed is confirmed, then it stops


def seed_observations(key: Any, network_id: str, addresses: dict[NodeId, list[str]], now_ms: int) -> list[Entry]:
    """The holder's CONNECTION entries, one per listed member, each carrying that member's addresses."""
    return [Entry(EntryType.CONNECTION, key.node_id, node, "", key.node_id, now_ms, now_ms,
                  {"addrs": sorted(addrs)[:MAX_ADDRESSES_PER_MEMBER]}).signed_by(key, network_id)
            for node, addrs in sorted(addresses.items())]


def listed_addresses(seed: SeedSpore) -> dict[NodeId, list[str]]:
    """Addresses the holder listed for each of its connections (from its own CONNECTION entries)."""
    listed = set(seed.connections)
    out: dict[NodeId, list[str]] = {}
    for e in seed.observations:
        addrs = e.body.get("addrs") if e.type == EntryType.CONNECTION else None
        if e.subject in listed and isinstance(addrs, list):
            out[e.subject] = [a for a in addrs if isinstance(a, str)][:MAX_ADDRESSES_PER_MEMBER]
    return out


class SeedExchange:
    """Serves Seeds when this node holds a role that keeps the chain, and bootstraps from one when joining."""

    RPC = RPC_SEED

    def __init__(self, session: Any) -> None:
        self.session = session
        self.seed: SeedSpore | None = None  # the verified Seed this node bootstrapped from
        self.adoption: SeedAdoption | None = None
        self.checked: str | None = None  # "agrees" / "contradicted" once the verified chain reached its height
        self.served = 0
        # decided once, at session start: a node that starts without the chain or as a non-member
        # bootstraps from a Seed even if catch-up and admission then finish before the Seed arrives
        self.joining = self._joining()

    # ------------------------------------------------------------------------------ holder side
    def make(self) -> bytes:
        s = self.session
        ledger, me = s.ledger, s.key.node_id
        head = ledger.head
        if head is None or head.role_of(me) not in SEED_HOLDER_ROLES:
            return b""
        members = [p for p in s.mesh.admitted_peers() if p in head.members and p != me][:MAX_SEED_CONNECTIONS]
        known = {p.node_id: list(p.addresses) for p in s.mesh.peers()}
        addresses = {p: known[p] for p in members if known.get(p)}
        now_ms = int(time.time() * 1000)
        snapshot: CertifiedPrimary = ledger.chain.head
        seed = make_seed(s.key, s.membership.network_id, snapshot, members,
                         seed_observations(s.key, s.membership.network_id, addresses, now_ms), created_ms=now_ms)
        self.served += 1
        return seed.to_bytes()

    async def handle_rpc(self, peer: NodeId, data: bytes) -> bytes:
        return self.make()

    # ------------------------------------------------------------------------------ joiner side
    def accept(self, holder: NodeId, data: bytes) -> SeedSpore | None:
        """A Seed answer from `holder`: verified and its addresses taken, or dropped and counted."""
        s = self.session
        try:
            seed = SeedSpore.from_bytes(data)
            seed.verify(s.membership.network_id)
        except SeedError as exc:
            s.rejected["seed_invalid"] += 1
            log.warning("dropped a Seed spore", peer=holder, error=str(exc))
            return None
        for node, addrs in listed_addresses(seed).items():
            if node != s.key.node_id and addrs:
                s.mesh.add_addresses(node, addrs)
        self.seed = seed
        log.info(f"bootstrapped from a Seed of {seed.holder[:16]}: {len(seed.connections)} members listed, "
                 f"head {seed.snapshot.primary.height}", holder=seed.holder, members=len(seed.connections),
                 head=seed.snapshot.primary.height)
        return seed

    def _joining(self) -> bool:
        head = self.session.ledger.head
        return head is None or self.session.key.node_id not in head.members

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        s = self.session
        task_status.started()
        asks = 0
        while self.joining and self.seed is None and asks < MAX_SEED_ASKS:
            peers = s.mesh.admitted_peers()
            if peers:
                peer = random.choice(peers)
                asks += 1
                try:
                    answer = await s.mesh.request(peer, RPC_SEED, b"", timeout_s=SEED_TIMEOUT_S)
                except Exception as exc:  # mesh errors (gone, no such rpc on an older build): ask again later
                    log.debug("seed request failed", peer=peer, error=repr(exc))
                    answer = b""
                if answer and self.accept(peer, answer) is not None:
                    break
            await trio.sleep(s.config.peers_interval_s)
        rounds = 0
        while self.seed is not None and (self.checked is None or self._unconfirmed()) and rounds < MAX_ADOPTION_ROUNDS:
            rounds += 1
            self.adoption = adoptable(self.seed, s.mesh.admitted_peers())
            self.check_head()
            await trio.sleep(s.config.peers_interval_s)

    def _unconfirmed(self) -> bool:
        return self.adoption is None or bool(self.adoption.unconfirmed)

    def check_head(self) -> None:
        """Once the verified chain reaches the Seed's height, does it hold the same Primary there?"""
        chain = self.session.ledger.chain
        hint = self.seed.snapshot.primary
        if self.checked is not None or chain is None or chain.height < hint.height:
            return
        link = chain.get(hint.height)
        if link is None:  # pruned or skipped by state sync: nothing to compare against
            self.checked = "unchecked"
        elif link.primary.hash() == hint.hash():
            self.checked = "agrees"
        else:
            self.checked = "contradicted"
            self.session.rejected["seed_contradicted"] += 1
            log.warning("the verified chain contradicts the Seed's head", holder=self.seed.holder, height=hint.height)

    def status(self) -> dict | None:
        """For `mycelium status`: where this node bootstrapped from, None without a Seed."""
        if self.seed is None:
            return None
        adoption = self.adoption
        return {"holder": self.seed.holder, "head": self.seed.snapshot.primary.height,
                "listed": len(self.seed.connections), "confirmed": len(adoption.connections) if adoption else 0,
                "head_check": self.checked}
