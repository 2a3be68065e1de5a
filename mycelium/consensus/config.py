"""Consensus configuration: one frozen dataclass, every field documented."""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.config import HEARTBEAT_S


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    # Round r's timeouts are base + r × increment (Tendermint's rule): after the network settles
    # (GST), timeouts eventually exceed the real delays and a round with an honest proposer decides.
    # Larger bases waste time when a proposer is down; smaller ones cost extra rounds on slow links.
    propose_timeout_s: float = 3.0  # wait this long for the round's proposal, then commit to nil
    propose_timeout_increment_s: float = 1.0
    commit_timeout_s: float = 1.0  # after our commitment: reveal when 2f+1 commitments arrived or this elapses
    commit_timeout_increment_s: float = 0.5
    reveal_timeout_s: float = 1.0  # after 2f+1 reveals of any kind: precommit nil if none reached 2f+1 for one hash
    reveal_timeout_increment_s: float = 0.5
    precommit_timeout_s: float = 1.0  # after 2f+1 precommits of any kind: move to the next round
    precommit_timeout_increment_s: float = 0.5
    # Heights are produced even when nothing happens: a proposer with an empty batch waits up to this
    # long (from the start of the height) for operations before it proposes the empty batch. Larger =
    # fewer empty heights (cheaper), smaller = fresher liveness and membership data in the Primary.
    heartbeat_interval_s: float = float(HEARTBEAT_S)
    batch_poll_interval_s: float = 0.5  # how often a waiting proposer asks the application for operations
    # Resend our own signed messages of the current round this often: recovers from dropped messages
    # without a gossip layer. Smaller = faster recovery, more traffic.
    rebroadcast_interval_s: float = 2.0
    decisions_kept: int = 16  # decided heights kept to help lagging validators catch up
    max_future_messages: int = 2048  # messages for height+1 buffered until we get there; more are dropped

    def propose_timeout(self, round_: int) -> float:
        return self.propose_timeout_s + round_ * self.propose_timeout_increment_s

    def commit_timeout(self, round_: int) -> float:
        return self.commit_timeout_s + round_ * self.commit_timeout_increment_s

    def reveal_timeout(self, round_: int) -> float:
        return self.reveal_timeout_s + round_ * self.reveal_timeout_increment_s

    def precommit_timeout(self, round_: int) -> float:
        return self.precommit_timeout_s + round_ * self.precommit_timeout_increment_s

    @classmethod
    def lan(cls) -> ConsensusConfig:
        """Defaults: home networks and LANs."""
        return cls()

    @classmethod
    def wan(cls) -> ConsensusConfig:
        """Validators across the internet: round trips of hundreds of ms, occasional loss."""
        return cls(
            propose_timeout_s=6.0, propose_timeout_increment_s=2.0, commit_timeout_s=2.0,
            commit_timeout_increment_s=1.0, reveal_timeout_s=2.0, reveal_timeout_increment_s=1.0,
            precommit_timeout_s=2.0, precommit_timeout_increment_s=1.0, rebroadcast_interval_s=4.0,
        )

    @classmethod
    def local(cls) -> ConsensusConfig:
        """Tests and the simulator: short virtual-time timeouts, frequent heartbeats."""
        return cls(
            propose_timeout_s=1.0, propose_timeout_increment_s=0.5, commit_timeout_s=0.5,
            commit_timeout_increment_s=0.25, reveal_timeout_s=0.5, reveal_timeout_increment_s=0.25,
            precommit_timeout_s=0.5, precommit_timeout_increment_s=0.25, heartbeat_interval_s=1.0,
            batch_poll_interval_s=0.25, rebroadcast_interval_s=1.0,
        )
