"""The consensus state machine: Tendermint's rounds and locks with a commit-reveal prevote. Pure.

Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus" (2018), Algorithm 1, where the
prevote is split in two: a Commitment to the candidate hash (computed by executing the batch
ourselves), then its Reveal. "2f+1 PREVOTE for id(v)" reads "2f+1 reveals of v that open their
commitments"; id(v) is the candidate Primary hash. All transition rules are in `_apply_rules` and
`on_tick`; messages and ticks come in, effects (mycelium.shell.effects + consensus.outcomes) go out.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from enum import Enum
from typing import Any

from mycelium.shell.effects import Broadcast, Effect, Send, SetTimer
from mycelium.encoding import HASH_SIZE
from mycelium.identity import NodeId, NodeKey
from mycelium.spores.certificate import CertificateError, QuorumCertificate, fault_tolerance, quorum_size

from mycelium.consensus.application import Application
from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.messages import (
    NIL, Commitment, Decision, MessageError, Precommit, Proposal, Reveal, Status, VoteMessage,
    commit_nonce, commitment_hash, parse_message, sign, verify_message,
)
from mycelium.consensus.outcomes import Behind, Decided, Participation, PersistLock
from mycelium.consensus.persist import STATE_VERSION, ConsensusStateError, load_state
from mycelium.consensus.votes import Added, RoundVotes

ROUND_WINDOW = 4  # votes are stored for rounds up to current + this; further ones only count for round skips


# Every input the core drops or merely notes is counted in `ConsensusCore.errors` under one of these.
REJECTIONS = {
    "malformed": "not a consensus message of this version (undecodable, wrong types, bad sizes)",
    "not_validator": "signed by a node outside this height's validator set",
    "not_proposer": "a proposal from a validator that is not this round's proposer",
    "bad_signature": "signature does not verify for its claimed validator",
    "old_height": "for a height we already decided (a straggler; a stuck sender gets the decision)",
    "future_buffered": "for the next height: kept until we get there",
    "future_dropped": "for a later height, or the buffer is full (it is resent)",
    "round_ahead": "too many rounds ahead to store; counted toward a round skip only",
    "duplicate": "the same message again (rebroadcast)",
    "equivocation": "a second, different signed message for one step: evidence emitted",
    "decision_not_current": "a catch-up decision for a height we are not at",
    "bad_decision": "a catch-up decision whose certificate or batch does not check out",
    "behind": "a peer no longer keeps the decisions we need: a Behind effect asked for a state sync",
    "refused_double_sign": "we were about to sign a different message for a step already signed",
}


class Step(str, Enum):
    PROPOSE = "propose"  # waiting for the round's proposal
    COMMIT = "commit"  # committed; waiting for 2f+1 commitments (or the commit timeout) to reveal
    REVEAL = "reveal"  # revealed; waiting for 2f+1 matching reveals to lock and precommit
    PRECOMMIT = "precommit"  # precommitted; waiting for a decision or the next round


_STEP_ORDER = {Step.PROPOSE: 0, Step.COMMIT: 1, Step.REVEAL: 2, Step.PRECOMMIT: 3}


class ConsensusCore:
    """One validator's (or observer's) view of consensus, height by height."""

    def __init__(self, key: NodeKey, network_id: str, app: Application, config: ConsensusConfig | None = None,
                 *, height: int, prev_hash: bytes) -> None:
        if len(prev_hash) != HASH_SIZE:
            raise ValueError(f"prev_hash must be {HASH_SIZE} bytes (the hash of the Primary at height−1)")
        self.key, self.me, self.network_id, self.app = key, key.node_id, network_id, app
        self.config = config or ConsensusConfig()
        self.errors: Counter[str] = Counter()  # rejected input by reason (see on_message)
        self.decisions: OrderedDict[int, tuple[Decision, float]] = OrderedDict()  # height -> (proof, when)
        self._started = False
        self._last_now = float("-inf")  # latest `now` seen, to notice a clock that went back
        self._restored: dict | None = None
        self._reset(height, prev_hash, now=0.0)

    # -- persistence -------------------------------------------------------------------------------

    def persisted_state(self) -> dict[str, Any]:
        """What must survive a crash (canonical-encodable): height, round, step, locks and every
        message this node signed at this height, so a restarted node never signs differently."""
        return {
            "v": STATE_VERSION, "h": self.height, "prev": self.prev_hash, "r": self.round, "step": self.step.value,
            "locked": [self.locked_round, self.locked_value],
            "valid": [self.valid_round, self.valid_value, list(self.valid_batch) if self.valid_batch is not None else None],
            "own": {r: dict(slots) for r, slots in self.own.items()},
        }

    @classmethod
    def restore(cls, key: NodeKey, network_id: str, app: Application, config: ConsensusConfig | None = None,
                *, height: int, prev_hash: bytes, state: dict | None) -> ConsensusCore:
        """A core resuming from the last PersistLock state (None: nothing was ever persisted).
        ConsensusStateError if the state is corrupt or ahead of the node's decided Primary."""
        core = cls(key, network_id, app, config, height=height, prev_hash=prev_hash)
        if state is not None:
            core._restored = load_state(state, node_id=key.node_id, height=height, prev_hash=prev_hash)
        return core

    # -- the Core protocol -------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Begin (or resume) the current height. on_message/on_tick call this if the owner did not."""
        if self._started:
            return self._follow_clock(now)
        self._started = True
        self._last_now = now
        out: list[Effect] = []
        self._reset(self.height, self.prev_hash, now)
        restored, self._restored = self._restored, None
        if restored is None:
            self._start_round(0, now, out)
        else:
            self._resume(restored, now, out)
        self._arm("rebroadcast", now + self.config.rebroadcast_interval_s, out)
        self._apply_rules(now, out)
        return out

    def _follow_clock(self, now: float) -> list[Effect]:
        """A clock that went back (wall-clock shells, the simulator's clock jumps) would push every
        pending timer far away and stall us: move them back by the same amount."""
        out: list[Effect] = []
        if now < self._last_now:
            back = self._last_now - now
            self.height_started_at -= back
            for name, (at, height, round_) in sorted(self._timers.items()):
                self._timers[name] = (at - back, height, round_)
                out.append(SetTimer(name, at - back))
        self._last_now = now
        return out

    def on_message(self, sender: NodeId, message: Any, now: float) -> list[Effect]:
        """Handle any input: bad input is dropped and counted in `errors`, never raised."""
        out = self.start(now)
        try:
            msg = parse_message(message)
        except MessageError:
            self.errors["malformed"] += 1
            return out
        if isinstance(msg, Decision):
            self._on_decision(msg, now, out)
        elif isinstance(msg, Status):
            if msg.height < self.height:
                self._help_catch_up(sender, msg.height, now, out)
            elif msg.height > self.height:
                self._fell_behind(sender, msg.height, now, out)
        elif msg.height < self.height:
            self.errors["old_height"] += 1
            self._help_catch_up(sender, msg.height, now, out)
        elif msg.height > self.height:
            self._buffer_future(msg)
            self._ask_for_catch_up(sender, now, out)
        else:
            self._on_vote(msg, now, out)
        return out

    def on_tick(self, now: float) -> list[Effect]:
        out = self.start(now)
        for name, (at, height, round_) in sorted(self._timers.items(), key=lambda item: item[1][0]):
            if at > now or self._timers.get(name) != (at, height, round_):
                continue
            del self._timers[name]
            if name == "rebroadcast" or height == self.height:
                self._fire(name, round_, now, out)
        self._apply_rules(now, out)
        return out

    def poke(self, now: float) -> list[Effect]:
        """The application has new operations: a proposer waiting for a heartbeat proposes now."""
        out = self.start(now)
        if self.proposer(self.height, self.round) == self.me and self.step is Step.PROPOSE:
            self._try_propose(now, out)
            self._apply_rules(now, out)
        return out

    def describe(self) -> dict[str, Any]:
        """Where this core stands and what it has heard, for a log line when no height is decided
        (a stall must say what consensus waits for)."""
        votes = self.votes.get(self.round)
        heard = {} if votes is None else {
            "proposal": votes.proposal is not None, "commitments": len(votes.commitments),
            "reveals": dict((v.hex()[:8] if v else "nil", n) for v, n in votes.reveal_tally().items()),
            "precommits": dict((v.hex()[:8] if v else "nil", n) for v, n in votes.precommit_tally().items())}
        refused = [r for r, c in sorted(self.candidates.items()) if c is None]
        return {"height": self.height, "round": self.round, "step": self.step.value, "locked_round": self.locked_round,
                "valid_round": self.valid_round, "heard": heard, "refused_rounds": refused[-8:],
                "errors": dict(self.errors)}

    def persist(self) -> dict[str, Any]:
        """mycelium.sim's name for persisted_state()."""
        return self.persisted_state()

    def proposer(self, height: int, round_: int) -> NodeId:
        """Deterministic rotation over the sorted validator set."""
        return self.validators[(height + round_) % len(self.validators)]

    # -- state -------------------------------------------------------------------------------------

    def _reset(self, height: int, prev_hash: bytes, now: float) -> None:
        self.height, self.prev_hash = height, prev_hash
        validators = sorted(self.app.validators(height))
        if not validators:
            raise ConsensusStateError(f"the application names no validators for height {height}")
        self.validators, self.vset = validators, frozenset(validators)
        self.is_validator = self.me in self.vset  # otherwise an observer: it follows and decides, never votes
        self.f, self.quorum = fault_tolerance(len(validators)), quorum_size(len(validators))
        self.round, self.step = 0, Step.PROPOSE
        self.locked_round, self.locked_value = -1, None
        self.valid_round, self.valid_value, self.valid_batch = -1, None, None
        self.votes: dict[int, RoundVotes] = {}
        self.candidates: dict[int, bytes | None] = {}  # round -> its proposal's hash if the app accepts it, else None
        self.executed: dict[int, bytes | None] = {}  # round -> its proposal's hash, the app's judgement aside
        self.own: dict[int, dict[str, Any]] = {}
        self.highest_round: dict[NodeId, int] = {}
        self.once: set[tuple[str, int]] = set()
        self.height_started_at = now
        self._timers: dict[str, tuple[float, int, int]] = getattr(self, "_timers", {})
        self._timers = {k: v for k, v in self._timers.items() if k == "rebroadcast"}
        self._future: list[VoteMessage] = getattr(self, "_future", [])
        self._helped: dict[NodeId, float] = getattr(self, "_helped", {})  # peer -> when we last helped it
        self._asked_at: float = getattr(self, "_asked_at", float("-inf"))
        self._behind_at: float = getattr(self, "_behind_at", float("-inf"))
        self._later_decisions: dict[int, Decision] = {
            h: d for h, d in getattr(self, "_later_decisions", {}).items() if h >= height
        }

    def _round(self, round_: int) -> RoundVotes:
        return self.votes.setdefault(round_, RoundVotes())

    def _arm(self, name: str, at: float, out: list[Effect]) -> None:
        self._timers[name] = (at, self.height, self.round)
        out.append(SetTimer(name, at))

    def _start_round(self, round_: int, now: float, out: list[Effect]) -> None:
        self.round, self.step = round_, Step.PROPOSE
        wait = self.config.propose_timeout(round_)
        if round_ == 0:
            wait += max(0.0, self.height_started_at + self.config.heartbeat_interval_s - now)
        self._arm("propose", now + wait, out)
        if self.proposer(self.height, round_) == self.me:
            self._try_propose(now, out)

    def _resume(self, state: dict, now: float, out: list[Effect]) -> None:
        self.round, self.step = state["round"], Step(state["step"])
        self.locked_round, self.locked_value = state["locked"]
        self.valid_round, self.valid_value, self.valid_batch = state["valid"]
        self.own = state["own"]
        for slots in self.own.values():
            for slot, wire in slots.items():
                if slot != "cand":
                    self._round(wire["r"]).add(parse_message(wire))
        timer = {Step.PROPOSE: ("propose", self.config.propose_timeout), Step.COMMIT: ("commit", self.config.commit_timeout),
                 Step.REVEAL: ("reveal", self.config.reveal_timeout), Step.PRECOMMIT: ("precommit", self.config.precommit_timeout)}
        name, timeout = timer[self.step]
        self._arm(name, now + timeout(self.round), out)
        self._rebroadcast(out)

    # -- signing (never twice differently) ---------------------------------------------------------

    def _sign_once(self, slot: str, message: VoteMessage, out: list[Effect], cand: bytes | None = None) -> VoteMessage:
        """Sign `message` unless this node already signed this step of this round; then the earlier
        message is returned (and counted if it differs). A new signature is persisted first."""
        slots = self.own.setdefault(message.round, {})
        earlier = slots.get(slot)
        if earlier is not None:
            old = parse_message(earlier)
            if old.signed_fields() != message.signed_fields():
                self.errors["refused_double_sign"] += 1
            return old
        signed = sign(message, self.key, self.network_id)
        slots[slot] = signed.to_wire()
        if cand is not None:
            slots["cand"] = cand
        return signed

    def _send_signed(self, slot: str, message: VoteMessage, out: list[Effect], cand: bytes | None = None) -> None:
        if not self.is_validator:
            return
        fresh = slot not in self.own.get(message.round, {})
        signed = self._sign_once(slot, message, out, cand)
        if fresh and slot == "precommit" and signed.value != NIL:
            self.locked_round, self.locked_value = signed.round, signed.value
        self._round(signed.round).add(signed)
        if fresh:
            out.append(PersistLock(self.persisted_state()))
        out.append(Broadcast(signed.to_wire()))

    # -- actions -----------------------------------------------------------------------------------

    def _try_propose(self, now: float, out: list[Effect]) -> None:
        if "proposal" in self.own.get(self.round, {}):
            return
        if self.valid_round >= 0:
            batch, valid_round = self.valid_batch, self.valid_round
        else:
            batch, valid_round = tuple(self.app.make_batch(self.height)), -1
            heartbeat_at = self.height_started_at + self.config.heartbeat_interval_s
            if not batch and self.round == 0 and now < heartbeat_at:
                self._arm("heartbeat", min(heartbeat_at, now + self.config.batch_poll_interval_s), out)
                return
        proposal = Proposal(self.height, self.round, tuple(batch), self.prev_hash, valid_round, self.me)
        self._send_signed("proposal", proposal, out)

    def _commit(self, candidate: bytes, now: float, out: list[Effect]) -> None:
        nonce = commit_nonce(self.key, self.network_id, self.height, self.round, candidate)
        sealed = commitment_hash(candidate, nonce, self.me, self.height, self.round)
        self.step = Step.COMMIT
        self._send_signed("commit", Commitment(self.height, self.round, sealed, self.me), out, cand=candidate)
        self._arm("commit", now + self.config.commit_timeout(self.round), out)

    def _reveal(self, out: list[Effect]) -> None:
        self.step = Step.REVEAL
        if not self.is_validator:
            return
        candidate = self.own[self.round]["cand"]
        nonce = commit_nonce(self.key, self.network_id, self.height, self.round, candidate)
        self._send_signed("reveal", Reveal(self.height, self.round, candidate, nonce, self.me), out)

    def _precommit(self, value: bytes, out: list[Effect]) -> None:
        self.step = Step.PRECOMMIT
        self._send_signed("precommit", Precommit(self.height, self.round, value, self.me), out)

    def _rebroadcast(self, out: list[Effect]) -> None:
        """Resend our signed messages of the current round, and of the rounds a lock or a re-proposal
        refers to: a validator that lost its memory of round vr (restart, partition) needs 2f+1 reveals
        from vr to accept a re-proposal of vr's value (Tendermint gets them from vote gossip)."""
        rounds = {self.round, self.valid_round, self.locked_round}
        proposal = self.votes[self.round].proposal if self.round in self.votes else None
        if proposal is not None:
            rounds.add(proposal.valid_round)
        for round_ in sorted(r for r in rounds if r >= 0):
            for slot, wire in self.own.get(round_, {}).items():
                if slot != "cand":
                    out.append(Broadcast(wire))

    def _candidate(self, round_: int) -> bytes | None:
        """The candidate hash of round_'s proposal, computed by us; None if the proposal is invalid.
        For a fresh proposal (nobody vouched for it yet): the application judges it (validate_batch)."""
        if round_ not in self.candidates:
            proposal = self.votes[round_].proposal
            valid = proposal.prev_hash == self.prev_hash and self.app.validate_batch(self.height, list(proposal.batch))
            self.candidates[round_] = self._executed(round_) if valid else None
        return self.candidates[round_]

    def _executed(self, round_: int) -> bytes | None:
        """round_'s proposal executed by us on our previous Primary, without validate_batch: for a
        value that 2f+1 reveals or precommits vouch for (so f+1 honest validators judged it valid).
        validate_batch is a local judgement that may change with time (the ledger refuses a clock
        operation over 10 s old): asked again in a later round it would refuse a value validators are
        locked on, and no height would ever be decided again. None if it builds on another Primary."""
        if round_ not in self.executed:
            proposal = self.votes[round_].proposal
            value = None
            if proposal.prev_hash == self.prev_hash:
                value = self.app.execute(self.height, list(proposal.batch), self.prev_hash)
                if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                    raise TypeError(f"Application.execute must return {HASH_SIZE} bytes, got {value!r}")
            self.executed[round_] = value
        return self.executed[round_]

    # -- the rules ---------------------------------------------------------------------------------

    def _apply_rules(self, now: float, out: list[Effect]) -> None:
        while self._rule_once(now, out):
            pass

    def _rule_once(self, now: float, out: list[Effect]) -> bool:
        h, r, q = self.height, self.round, self.quorum
        for rr in sorted(self.votes):  # decide: a proposal and 2f+1 precommits for its value, any round
            votes = self.votes[rr]
            top = votes.precommit_tally().most_common(1)
            if votes.proposal is not None and top and top[0][1] >= q and top[0][0] != NIL:
                value = top[0][0]
                if self._executed(rr) == value:  # 2f+1 precommits vouch for it
                    self._decide(rr, value, now, out)
                    return True
        skip_to = self._round_to_skip_to()
        if skip_to > r:
            self._start_round(skip_to, now, out)
            return True
        votes = self._round(r)
        proposal = votes.proposal
        if self.step is Step.PROPOSE and proposal is not None:
            vr = proposal.valid_round
            if vr == -1:
                candidate = self._candidate(r)
                acceptable = candidate is not None and (self.locked_round == -1 or self.locked_value == candidate)
                self._commit(candidate if acceptable else NIL, now, out)
                return True
            # A re-proposal of round vr's value: valid iff 2f+1 revealed it there (Tendermint's rule
            # waits for those prevotes, or the propose timeout). Not the app's judgement again: see _executed.
            candidate = self._executed(r)
            if candidate is None:
                self._commit(NIL, now, out)  # it builds on another Primary
                return True
            if vr in self.votes and self.votes[vr].reveal_tally()[candidate] >= q:
                acceptable = self.locked_round <= vr or self.locked_value == candidate
                self._commit(candidate if acceptable else NIL, now, out)
                return True
        if self.step is Step.COMMIT and len(votes.commitments) >= q:
            self._reveal(out)
            return True
        tally = votes.reveal_tally()
        if proposal is not None and _STEP_ORDER[self.step] >= _STEP_ORDER[Step.REVEAL] and ("valid", r) not in self.once:
            candidate = self._executed(r)  # 2f+1 reveals vouch for it
            if candidate is not None and candidate != NIL and tally[candidate] >= q:
                self.once.add(("valid", r))
                self.valid_round, self.valid_value, self.valid_batch = r, candidate, proposal.batch
                if self.step is Step.REVEAL:
                    self._precommit(candidate, out)  # locks (and persists the lock) before sending
                return True
        if self.step is Step.REVEAL and tally[NIL] >= q:
            self._precommit(NIL, out)
            return True
        if self.step is Step.REVEAL and sum(tally.values()) >= q and ("reveal_timer", r) not in self.once:
            self.once.add(("reveal_timer", r))
            self._arm("reveal", now + self.config.reveal_timeout(r), out)
            return True
        if len(votes.precommits) >= q and ("precommit_timer", r) not in self.once:
            self.once.add(("precommit_timer", r))
            self._arm("precommit", now + self.config.precommit_timeout(r), out)
            return True
        return False

    def _round_to_skip_to(self) -> int:
        """The highest round that at least f+1 validators (so one honest) have reached."""
        rounds = sorted(self.highest_round.values(), reverse=True)
        return rounds[self.f] if len(rounds) > self.f else -1

    def _fire(self, name: str, round_: int, now: float, out: list[Effect]) -> None:
        if name == "rebroadcast":
            self._rebroadcast(out)
            self._arm("rebroadcast", now + self.config.rebroadcast_interval_s, out)
            return
        if round_ != self.round:
            return
        if name == "propose" and self.step is Step.PROPOSE:
            self._commit(NIL, now, out)
        elif name == "heartbeat" and self.step is Step.PROPOSE:
            self._try_propose(now, out)
        elif name == "commit" and self.step is Step.COMMIT:
            self._reveal(out)
        elif name == "reveal" and self.step is Step.REVEAL:
            self._precommit(NIL, out)
        elif name == "precommit":
            self._start_round(round_ + 1, now, out)

    def _decide(self, round_: int, value: bytes, now: float, out: list[Effect]) -> None:
        votes = self.votes[round_]
        certificate = QuorumCertificate(self.height, round_, value, votes.precommit_signatures(value))
        participation = Participation(self.height, round_, *votes.participation(value))
        self._finish_height(votes.proposal.batch, certificate, now, out, participation)

    def _finish_height(self, batch: tuple, certificate: QuorumCertificate, now: float, out: list[Effect],
                       participation: Participation | None = None) -> None:
        height, value = certificate.height, certificate.value
        self.app.commit(height, value, list(batch))
        out.append(Decided(height, value, tuple(batch), certificate))
        if participation is not None:
            out.append(participation)
        self.decisions[height] = (Decision(height, tuple(batch), self.prev_hash, certificate), now)
        while len(self.decisions) > self.config.decisions_kept:
            self.decisions.popitem(last=False)
        self._reset(height + 1, value, now)
        self._start_round(0, now, out)
        later = self._later_decisions.pop(self.height, None)
        if later is not None:
            self._on_decision(later, now, out)
            if self.height != height + 1:
                return  # it decided this height too (and replayed the buffer there)
        future, self._future = self._future, []
        for msg in future:
            if msg.height == self.height:
                self._on_vote(msg, now, out)
            elif msg.height > self.height:
                self._buffer_future(msg)

    # -- input -------------------------------------------------------------------------------------

    def _on_vote(self, msg: VoteMessage, now: float, out: list[Effect]) -> None:
        if msg.validator not in self.vset:
            self.errors["not_validator"] += 1
            return
        if isinstance(msg, Proposal) and msg.validator != self.proposer(msg.height, msg.round):
            self.errors["not_proposer"] += 1
            return
        if not verify_message(msg, self.network_id):
            self.errors["bad_signature"] += 1
            return
        if msg.round > self.round:
            self.highest_round[msg.validator] = max(msg.round, self.highest_round.get(msg.validator, 0))
        if msg.round > self.round + ROUND_WINDOW:
            self.errors["round_ahead"] += 1  # counted for round skips only; it is resent when we get there
        else:
            added, evidence = self._round(msg.round).add(msg)
            out.extend(evidence)
            if added is Added.DUPLICATE:
                self.errors["duplicate"] += 1
            elif added is Added.CONFLICT:
                self.errors["equivocation"] += 1
        self._apply_rules(now, out)

    def _buffer_future(self, msg: Any) -> None:
        if msg.height != self.height + 1 or len(self._future) >= self.config.max_future_messages:
            self.errors["future_dropped"] += 1
            return
        self.errors["future_buffered"] += 1
        self._future.append(msg)

    def _ask_for_catch_up(self, sender: NodeId, now: float, out: list[Effect]) -> None:
        """A peer is at a later height: tell it where we are (at most twice per rebroadcast interval;
        a clock that went backwards re-allows it)."""
        if 0 <= now - self._asked_at < self.config.rebroadcast_interval_s / 2:
            return
        self._asked_at = now
        out.append(Send(sender, Status(self.height).to_wire()))

    def _help_catch_up(self, sender: NodeId, height: int, now: float, out: list[Effect]) -> None:
        # Votes for a height we just decided are normal stragglers; only a peer still voting there
        # half a rebroadcast interval later is stuck and gets the decision (once per interval).
        entry = self.decisions.get(height)
        last = self._helped.get(sender)
        oldest = next(iter(self.decisions), None)
        too_old = entry is None and oldest is not None and height < oldest
        if not too_old and (entry is None or 0 <= now - entry[1] < self.config.rebroadcast_interval_s / 2):
            return
        if last is not None and 0 <= now - last < self.config.rebroadcast_interval_s:
            return
        if len(self._helped) > 64 * len(self.validators):  # many senders (relays, observers): start over
            self._helped.clear()
        self._helped[sender] = now
        if too_old:
            # We no longer keep the decisions it needs: say where we are, so its owner syncs the
            # chain from us (a Status above its height means exactly that; see _fell_behind).
            out.append(Send(sender, Status(self.height).to_wire()))
            return
        for h, (decision, _) in self.decisions.items():  # all we have from its height on, oldest first
            if h >= height:
                out.append(Send(sender, decision.to_wire()))

    def _fell_behind(self, sender: NodeId, height: int, now: float, out: list[Effect]) -> None:
        """A peer at a later height could not send us the decisions in between: ask our owner for a
        state sync from it (at most once per rebroadcast interval; a clock gone back re-allows it)."""
        if 0 <= now - self._behind_at < self.config.rebroadcast_interval_s:
            return
        self._behind_at = now
        self.errors["behind"] += 1
        out.append(Behind(sender, self.height, height))

    def _on_decision(self, decision: Decision, now: float, out: list[Effect]) -> None:
        if decision.height > self.height and len(self._later_decisions) < self.config.decisions_kept:
            self._later_decisions[decision.height] = decision  # checked when we get there
            return
        if decision.height != self.height:
            self.errors["decision_not_current"] += 1
            return
        try:
            decision.certificate.verify(self.network_id, self.validators)
        except CertificateError:
            self.errors["bad_decision"] += 1
            return
        batch = list(decision.batch)
        # The certificate vouches for the batch; validate_batch (a local judgement that lapses with
        # time) would refuse a node more than a few seconds behind every decision it needs.
        if (decision.prev_hash != self.prev_hash
                or self.app.execute(self.height, batch, self.prev_hash) != decision.certificate.value):
            self.errors["bad_decision"] += 1  # certified by a quorum yet not what we compute: a local bug
            return
        self._finish_height(decision.batch, decision.certificate, now, out)
        self._apply_rules(now, out)
