"""The node's copy of the Primary chain, and a sans-IO catch-up core.

`PrimaryChain` holds the newest certified Primaries (bounded history; the Genesis record is always
known), accepts a link only if `verify_successor` accepts it against the current head, and serves
ranges to peers. A SQLite layer (mycelium.storage) persists what it holds; on restart
`PrimaryChain.resume` trusts the links the node itself verified and stored before.

`PrimaryCatchup` is the catch-up protocol (implements mycelium.shell.effects.Core): every interval it
asks one peer for the links after its head (`PrimaryRequest`), verifies every certificate of the
answer (`PrimaryLinks`) and appends them; a tampered link is dropped with the chain's reason
(counted in `rejected`) and the peer is reported to trust scoring. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Iterable

from mycelium.shell.effects import Effect, Send, SetTimer
from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import Genesis, NodeId
from mycelium.spores.primary import (
    MAX_PRIMARY_BYTES,
    CertifiedPrimary,
    ChainError,
    PrimaryError,
    PrimarySpore,
    verify_genesis,
    verify_successor,
)
from mycelium.spores.validation import DropReason, NullTrustReporter, TrustReporter

CATCHUP_VERSION = 1
MAX_LINKS_PER_MESSAGE = 64
SYNC_LINKS_PER_PAGE = 16  # epoch links per state-sync answer
MAX_EPOCH_LINKS = 65_536  # validator-set changes remembered (kept forever; a household makes a few a week)


@dataclass(frozen=True, slots=True)
class ChainConfig:
    # certified Primaries kept (and served to peers); older ones are pruned. At one decision per
    # few seconds, 4096 links cover hours: enough for a node that was offline to catch up link by link
    max_history: int = 4096
    catchup_interval_s: float = 2.0  # how often we ask a peer for links after our head
    max_links_per_message: int = 32  # per answer; each link may carry a large Primary
    timer_name: str = "spores.primary.catchup"

    def __post_init__(self) -> None:
        if self.max_history < 1 or not 1 <= self.max_links_per_message <= MAX_LINKS_PER_MESSAGE:
            raise ValueError(f"ChainConfig: max_history ≥ 1 and 1 ≤ max_links_per_message ≤ {MAX_LINKS_PER_MESSAGE}")
        if self.catchup_interval_s <= 0:
            raise ValueError("ChainConfig.catchup_interval_s must be positive")


class PrimaryChain:
    """Verified certified Primaries from some trusted height up to the head (bounded)."""

    def __init__(self, genesis: Genesis, genesis_link: CertifiedPrimary, config: ChainConfig | None = None) -> None:
        verify_genesis(genesis_link.primary, genesis_link.certificate, genesis)
        self.genesis = genesis
        self.config = config or ChainConfig()
        self._links: deque[CertifiedPrimary] = deque([genesis_link], maxlen=self.config.max_history)
        # the first link of every epoch (each validator-set change), genesis included: kept forever,
        # so anyone can verify genesis → each change → a recent head (mycelium.spores.statesync)
        self.epoch_links: dict[int, CertifiedPrimary] = {0: genesis_link}

    def set_history(self, max_history: int) -> None:
        """Keep only the newest `max_history` links from now on (tests make it small)."""
        if max(1, max_history) != self._links.maxlen:
            self._links = deque(self._links, maxlen=max(1, max_history))

    @property
    def history(self) -> int:
        """How many links this chain keeps (older ones are dropped as new ones arrive)."""
        return self._links.maxlen or 0

    def note_epoch_link(self, link: CertifiedPrimary) -> bool:
        """Remember `link` if it is the first of its epoch (True when it was new)."""
        epoch = link.primary.epoch
        if epoch in self.epoch_links or len(self.epoch_links) >= MAX_EPOCH_LINKS:
            return False
        self.epoch_links[epoch] = link
        return True

    def sync_proof(self, after_epoch: int, limit: int) -> SyncProof:
        """Epoch links above `after_epoch` (at most `limit`) and, once they reach the head's epoch,
        the head itself: what a joiner verifies instead of every link."""
        epochs = sorted(e for e in self.epoch_links if e > after_epoch)[:limit]
        links = tuple(self.epoch_links[e] for e in epochs)
        reached = (epochs[-1] if epochs else after_epoch) >= self.primary.epoch
        return SyncProof(links, self.head if reached else None)

    @classmethod
    def resume(cls, genesis: Genesis, stored: Iterable[CertifiedPrimary], config: ChainConfig | None = None) -> PrimaryChain:
        """Rebuild from links this node verified before (its own disk): the first is trusted, every
        following one is verified again so a corrupted store is caught."""
        links = list(stored)
        if not links:
            raise ChainError("genesis", "no stored Primary to resume from; start from the genesis Primary")
        chain = cls.__new__(cls)
        chain.genesis = genesis
        chain.config = config or ChainConfig()
        if links[0].primary.network_id != genesis.network_id:
            raise ChainError("network", "the stored Primaries belong to another network than this node's genesis")
        if links[0].primary.height == 0:
            verify_genesis(links[0].primary, links[0].certificate, genesis)
        chain._links = deque([links[0]], maxlen=chain.config.max_history)
        chain.epoch_links = {0: links[0]} if links[0].primary.height == 0 else {}  # the owner adds older ones
        chain.extend(links[1:])
        return chain

    @property
    def head(self) -> CertifiedPrimary:
        return self._links[-1]

    @property
    def primary(self) -> PrimarySpore:
        return self._links[-1].primary

    @property
    def height(self) -> int:
        return self._links[-1].primary.height

    @property
    def oldest_height(self) -> int:
        return self._links[0].primary.height

    def get(self, height: int) -> CertifiedPrimary | None:
        index = height - self.oldest_height
        return self._links[index] if 0 <= index < len(self._links) else None

    def append(self, link: CertifiedPrimary) -> None:
        """Add the next link; ChainError (with its reason) if it does not follow the head."""
        verify_successor(self.primary, link.primary, link.certificate)
        if link.primary.epoch != self.primary.epoch:
            self.note_epoch_link(link)
        self._links.append(link)

    def extend(self, links: Iterable[CertifiedPrimary]) -> int:
        """Append links in order, skipping ones we already hold; returns how many were added."""
        added = 0
        for link in links:
            if link.primary.height <= self.height:  # already held, or pruned from our history
                held = self.get(link.primary.height)
                if held is not None and held.primary.hash() != link.primary.hash():
                    raise ChainError("prev_hash", f"a different Primary is certified at height {link.primary.height}: a fork or a forgery")
                continue
            self.append(link)
            added += 1
        return added

    def links_after(self, height: int, limit: int) -> list[CertifiedPrimary]:
        start = max(height + 1, self.oldest_height)
        return [self._links[h - self.oldest_height] for h in range(start, min(self.height, start + limit - 1) + 1)]


# --------------------------------------------------------------------------- catch-up protocol


@dataclass(frozen=True, slots=True)
class PrimaryRequest:
    after_height: int  # send the links above this height

    def to_bytes(self) -> bytes:
        return canonical({"v": CATCHUP_VERSION, "t": 1, "after": self.after_height})


@dataclass(frozen=True, slots=True)
class PrimaryLinks:
    links: tuple[CertifiedPrimary, ...]

    def to_bytes(self) -> bytes:
        return canonical({"v": CATCHUP_VERSION, "t": 2, "links": [link.to_wire() for link in self.links]})


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """State sync, next page: the epoch links above `after_epoch` (the last one we verified)."""

    after_epoch: int

    def to_bytes(self) -> bytes:
        return canonical({"v": CATCHUP_VERSION, "t": 3, "after_epoch": self.after_epoch})


@dataclass(frozen=True, slots=True)
class SyncProof:
    """The answer to a request below the peer's kept history: the first link of each epoch (from
    genesis, or above the requested epoch) and, on the last page, the head."""

    epoch_links: tuple[CertifiedPrimary, ...]
    head: CertifiedPrimary | None

    def to_bytes(self) -> bytes:
        return canonical({"v": CATCHUP_VERSION, "t": 4, "epochs": [link.to_wire() for link in self.epoch_links],
                          "head": self.head.to_wire() if self.head is not None else None})


class CatchupMessageError(ValueError):
    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decode_catchup(data: Any) -> PrimaryRequest | PrimaryLinks | SyncRequest | SyncProof:
    if isinstance(data, (PrimaryRequest, PrimaryLinks, SyncRequest, SyncProof)):
        data = data.to_bytes()
    if not isinstance(data, (bytes, bytearray)):
        raise CatchupMessageError(DropReason.MALFORMED, "catch-up message must be bytes")
    max_bytes = MAX_LINKS_PER_MESSAGE * MAX_PRIMARY_BYTES // 16
    if len(data) > max_bytes:
        raise CatchupMessageError(DropReason.OVERSIZE, f"catch-up message of {len(data)} bytes exceeds {max_bytes}")
    try:
        obj = decode(bytes(data), max_size=max_bytes)
    except EncodingError as exc:
        raise CatchupMessageError(DropReason.MALFORMED, str(exc)) from exc
    if not isinstance(obj, dict):
        raise CatchupMessageError(DropReason.MALFORMED, "catch-up message must be a map")
    if obj.get("v") != CATCHUP_VERSION:
        raise CatchupMessageError(DropReason.UNSUPPORTED_VERSION, f"catch-up version {obj.get('v')!r} is not {CATCHUP_VERSION}")
    if obj.get("t") == 1 and set(obj) == {"v", "t", "after"}:
        after = obj["after"]
        if isinstance(after, int) and not isinstance(after, bool) and after >= -1:
            return PrimaryRequest(after)
    elif obj.get("t") == 2 and set(obj) == {"v", "t", "links"}:
        links = obj["links"]
        if isinstance(links, list) and len(links) <= MAX_LINKS_PER_MESSAGE:
            try:
                return PrimaryLinks(tuple(CertifiedPrimary.from_wire(link) for link in links))
            except PrimaryError as exc:
                raise CatchupMessageError(DropReason.MALFORMED, str(exc)) from exc
    elif obj.get("t") == 3 and set(obj) == {"v", "t", "after_epoch"}:
        after = obj["after_epoch"]
        if isinstance(after, int) and not isinstance(after, bool) and after >= -1:
            return SyncRequest(after)
    elif obj.get("t") == 4 and set(obj) == {"v", "t", "epochs", "head"}:
        epochs, head = obj["epochs"], obj["head"]
        if isinstance(epochs, list) and len(epochs) <= MAX_LINKS_PER_MESSAGE - 1:
            try:
                return SyncProof(tuple(CertifiedPrimary.from_wire(link) for link in epochs),
                                 CertifiedPrimary.from_wire(head) if head is not None else None)
            except PrimaryError as exc:
                raise CatchupMessageError(DropReason.MALFORMED, str(exc)) from exc
    elif obj.get("t") not in (1, 2, 3, 4):
        raise CatchupMessageError(DropReason.UNKNOWN_TYPE, f"catch-up message type {obj.get('t')!r} is unknown")
    raise CatchupMessageError(DropReason.MALFORMED, "catch-up message fields are malformed")


class PrimaryCatchup:
    """Pulls Primaries newer than our head from peers and serves ours (a mycelium.shell.effects.Core).

    Appended links are also returned as `NewPrimary` effects, so the owner can persist them
    (fsync before acting on them) and update validation (members, contradictions)."""

    def __init__(self, node_id: NodeId, chain: PrimaryChain | None, *, genesis: Genesis | None = None,
                 config: ChainConfig | None = None, reporter: TrustReporter | None = None,
                 rng: random.Random | None = None) -> None:
        """`chain` None: a joiner that holds only the network's Genesis record (`genesis`); the chain
        starts with the genesis Primary of the first answer (checked against the record)."""
        if chain is None and genesis is None:
            raise ValueError("PrimaryCatchup without a chain needs the network's genesis")
        self.node_id = node_id
        self.chain = chain
        self.genesis = genesis if genesis is not None else chain.genesis
        self.config = config or (chain.config if chain is not None else ChainConfig())
        self.reporter: TrustReporter = reporter or NullTrustReporter()
        self.rng = rng or random.Random(node_id)
        self.peers: tuple[NodeId, ...] = ()
        self.next_at: float | None = None
        self.drops: Counter[DropReason] = Counter()  # messages dropped, by reason
        self.rejected: Counter[str] = Counter()  # links refused, by ChainError reason
        self._sync: dict[NodeId, Any] = {}  # sender → SyncProgress of a state sync in progress

    @property
    def height(self) -> int:
        """Our head's height; -1 while we hold no chain."""
        return self.chain.height if self.chain is not None else -1

    def set_peers(self, peers: Iterable[NodeId]) -> None:
        self.peers = tuple(sorted(p for p in set(peers) if p != self.node_id))

    def on_tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.next_at is None or now >= self.next_at:
            if self.peers:
                peer = self.rng.choice(self.peers)
                effects.append(Send(peer, PrimaryRequest(self.height).to_bytes()))
            self.next_at = now + self.config.catchup_interval_s
        effects.append(SetTimer(self.config.timer_name, self.next_at))
        return effects

    def on_peer_admitted(self, peer: NodeId, peers: Iterable[NodeId], now: float) -> list[Effect]:
        """A peer was just admitted: ask it at once instead of at the next tick (a joiner's first peer
        holds the chain it is waiting for; a full interval here was most of a join's time)."""
        self.set_peers(peers)
        if peer not in self.peers:
            return []
        self.next_at = now + self.config.catchup_interval_s
        return [Send(peer, PrimaryRequest(self.height).to_bytes()), SetTimer(self.config.timer_name, self.next_at)]

    def on_message(self, sender: NodeId, message: Any, now: float) -> list[Effect]:
        try:
            msg = decode_catchup(message)
        except CatchupMessageError as exc:
            self.drops[exc.reason] += 1
            self.reporter.report_invalid(sender, None, exc.reason)
            return []
        if isinstance(msg, PrimaryRequest):
            if self.chain is None:
                return []
            if msg.after_height + 1 < self.chain.oldest_height:  # pruned here: verify from genesis instead
                return [Send(sender, self.chain.sync_proof(-1, SYNC_LINKS_PER_PAGE).to_bytes())]
            links = self.chain.links_after(msg.after_height, self.config.max_links_per_message)
            return [Send(sender, PrimaryLinks(tuple(links)).to_bytes())] if links else []
        if isinstance(msg, SyncRequest):
            return [] if self.chain is None else [Send(sender, self.chain.sync_proof(msg.after_epoch, SYNC_LINKS_PER_PAGE).to_bytes())]
        if isinstance(msg, SyncProof):
            return self._on_sync_proof(sender, msg)
        return self._on_links(sender, msg)

    def _on_sync_proof(self, sender: NodeId, msg: SyncProof) -> list[Effect]:
        """A page of a state-sync proof (mycelium.spores.statesync): verified, then the next page is
        asked for, or — with the head verified — the owner starts its chain there (SyncedHead)."""
        from mycelium.spores.statesync import SyncProgress

        progress = self._sync.get(sender)
        if progress is None or not msg.epoch_links or msg.epoch_links[0].primary.height == 0:
            progress = SyncProgress(self.genesis)  # a fresh proof (from genesis)
        try:
            progress.verify(msg)
        except ChainError as exc:
            self._sync.pop(sender, None)
            self.rejected[exc.reason] += 1
            self.reporter.report_invalid(sender, None, DropReason.BAD_PRIMARY)
            return []
        if progress.head is None:
            if len(self._sync) >= 16 and sender not in self._sync:
                self._sync.clear()  # bounded: a few peers' proofs in progress at most
            self._sync[sender] = progress
            return [Send(sender, SyncRequest(progress.trusted_epoch).to_bytes())] if msg.epoch_links else []
        self._sync.pop(sender, None)
        if progress.head.primary.height <= self.height:
            return []
        return [SyncedHead(progress)]

    def _on_links(self, sender: NodeId, msg: PrimaryLinks) -> list[Effect]:
        effects: list[Effect] = []
        for link in sorted(msg.links, key=lambda l: l.primary.height):
            if link.primary.height <= self.height:
                continue  # already held (extend would check it matches; not needed to make progress)
            if link.primary.height > self.height + 1:  # a pushed link past a gap we missed: not a fault
                effects.append(Send(sender, PrimaryRequest(self.height).to_bytes()))
                break
            try:
                if self.chain is None:
                    self.chain = PrimaryChain(self.genesis, link, self.config)
                else:
                    self.chain.append(link)
            except ChainError as exc:
                self.rejected[exc.reason] += 1
                self.reporter.report_invalid(sender, None, DropReason.BAD_PRIMARY)
                break  # later links cannot follow a refused one
            effects.append(NewPrimary(link))
        if effects and len(msg.links) >= self.config.max_links_per_message:
            effects.append(Send(sender, PrimaryRequest(self.height).to_bytes()))  # more may follow
        return effects


@dataclass(frozen=True, slots=True)
class SyncedHead:
    """Effect: a state-sync proof verified up to a head above ours (`progress`: a SyncProgress):
    restart the chain at that head (persist it first), then give the new chain to this core."""

    progress: Any


@dataclass(frozen=True, slots=True)
class NewPrimary:
    """Effect: a verified Primary was appended to the chain (persist it, then act on it)."""

    link: CertifiedPrimary
