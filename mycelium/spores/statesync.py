"""State sync: start from a recent certified Primary without replaying every link. Pure.

Links where the validator set changed are kept forever (`PrimaryChain.epoch_links`: the first
Primary of each epoch), the rest only for a window. A joiner, or a member offline longer than the
window, verifies genesis → the first link of each later epoch → a recent head, the way a Tendermint
light client skips: within an epoch the validator set does not change, so the first Primary of
epoch e is certified by epoch e−1's validators, and the head by its own epoch's. It then starts from
the head's full state (every Primary carries the whole state). Safety rests on each epoch's
validators having been honest by more than two thirds, as consensus itself assumes.

    progress = SyncProgress(genesis)
    progress.verify(proof)            # ChainError if anything does not check out
    if progress.head is None: ask for SyncRequest(progress.trusted_epoch) next
"""

from __future__ import annotations

from mycelium.identity import Genesis
from mycelium.spores.chain import SyncProof
from mycelium.spores.primary import CertifiedPrimary, ChainError, verify_certificate, verify_genesis


class SyncProgress:
    """What a syncing node has verified so far: the newest trusted epoch link, then the head."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.epoch_links: list[CertifiedPrimary] = []  # verified, oldest first (genesis first)
        self.head: CertifiedPrimary | None = None

    @property
    def trusted_epoch(self) -> int:
        return self.epoch_links[-1].primary.epoch if self.epoch_links else -1

    def verify(self, proof: SyncProof) -> None:
        """Verify one page; on success the links are added and, on the last page, `head` is set."""
        links = list(proof.epoch_links)
        if not self.epoch_links:
            if not links:
                raise ChainError("genesis", "a state-sync proof must start with the genesis Primary")
            first = links.pop(0)
            verify_genesis(first.primary, first.certificate, self.genesis)
            self.epoch_links.append(first)
        for link in links:
            trusted = self.epoch_links[-1].primary
            p = link.primary
            if p.network_id != trusted.network_id:
                raise ChainError("network", f"epoch link is for network {p.network_id[:16]}")
            if p.epoch != trusted.epoch + 1 or p.height <= trusted.height:
                raise ChainError("epoch", f"epoch link at height {p.height} (epoch {p.epoch}) does not follow "
                                          f"epoch {trusted.epoch} at height {trusted.height}")
            verify_certificate(p, link.certificate, trusted.validators())
            self.epoch_links.append(link)
        if proof.head is None:
            return
        trusted = self.epoch_links[-1].primary
        head = proof.head.primary
        if head.network_id != trusted.network_id or head.epoch != trusted.epoch or head.height < trusted.height:
            raise ChainError("epoch", f"head at height {head.height} (epoch {head.epoch}) is not in the last "
                                      f"verified epoch {trusted.epoch}")
        if head.height == trusted.height:
            if head.hash() != trusted.hash():
                raise ChainError("prev_hash", f"two different Primaries at height {head.height}")
        else:
            verify_certificate(head, proof.head.certificate, trusted.validators())
        self.head = proof.head
