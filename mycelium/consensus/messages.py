"""Consensus wire messages: frozen, signed by their validator, versioned, strictly parsed.

Every message is signed over domain-separated canonical bytes that name the network, the message
type (the step), the height and the round, so a signature can never be replayed in another network,
step, height or round. A precommit signs exactly `precommit_signing_bytes(...)` from
mycelium.spores.certificate, so 2f+1 precommit signatures *are* a quorum certificate.

`from_wire` refuses anything malformed with MessageError (a remote fault: drop and count it). The
authority of a message is its signed `validator` field, not the transport sender: messages may be
relayed by gossip.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Union

from mycelium.encoding import HASH_SIZE, EncodingError, canonical, decode, digest, hash_value
from mycelium.identity import SIGNATURE_SIZES, NodeId, NodeKey, is_node_id, verify
from mycelium.spores.certificate import CertificateError, QuorumCertificate, precommit_signing_bytes

WIRE_VERSION = 1
CONSENSUS_DOMAIN = b"mycelium-consensus-v1"
NONCE_DOMAIN = b"mycelium-commit-nonce-v1"
NIL = b""  # the nil vote: "no valid proposal this round"
MAX_ROUND = 2**31 - 1
MAX_HEIGHT = 2**63 - 1
MAX_BATCH_OPS = 4096  # a proposal with more operations is refused on receipt
MAX_MESSAGE_BYTES = 4 << 20  # a full proposal under the hybrid scheme: ~3.4 KB of signature per operation


class MessageType(IntEnum):
    # WARNING: ONLY APPEND TO THIS LIST! The numbers are on the wire and in signatures.
    PROPOSAL = 1
    COMMITMENT = 2
    REVEAL = 3
    PRECOMMIT = 4
    DECISION = 5
    STATUS = 6


class MessageError(ValueError):
    """A peer sent a message that is malformed, for another version, or badly signed."""


def _signing_bytes(network_id: str, mtype: MessageType, fields: dict) -> bytes:
    return CONSENSUS_DOMAIN + canonical({"net": network_id, "t": int(mtype), **fields})


def commitment_hash(candidate: bytes, nonce: bytes, validator: NodeId, height: int, round_: int) -> bytes:
    """H(candidate ‖ nonce ‖ validator ‖ height ‖ round): binds a vote without revealing it."""
    return hash_value([candidate, nonce, validator, height, round_], person=b"myc-commitment")


def commit_nonce(key: NodeKey, network_id: str, height: int, round_: int, candidate: bytes) -> bytes:
    """A secret nonce nobody else can compute, yet the same after a restart (Ed25519 is deterministic)."""
    signature = key.sign(NONCE_DOMAIN + canonical([network_id, height, round_, candidate]))
    return digest(signature, person=b"myc-nonce")


# --------------------------------------------------------------------------- field checks


def _int(obj: dict, name: str, low: int, high: int) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MessageError(f"field {name!r} must be an integer in [{low}, {high}]")
    return value


def _hash(obj: dict, name: str, *, nil_ok: bool = False) -> bytes:
    value = obj.get(name)
    if not isinstance(value, bytes) or not (len(value) == HASH_SIZE or (nil_ok and value == NIL)):
        raise MessageError(f"field {name!r} must be {HASH_SIZE} bytes" + (" or empty (nil)" if nil_ok else ""))
    return value


def _signer(obj: dict) -> tuple[NodeId, bytes]:
    validator, signature = obj.get("from"), obj.get("sig")
    if not is_node_id(validator):
        raise MessageError("field 'from' must be a node id")
    if not isinstance(signature, bytes) or len(signature) not in SIGNATURE_SIZES:
        raise MessageError(f"field 'sig' must be {' or '.join(map(str, SIGNATURE_SIZES))} bytes (classic or hybrid)")
    return validator, signature


def _batch(obj: dict) -> tuple:
    batch = obj.get("batch")
    if not isinstance(batch, list) or len(batch) > MAX_BATCH_OPS:
        raise MessageError(f"field 'batch' must be a list of at most {MAX_BATCH_OPS} operations")
    try:
        canonical(batch)
    except EncodingError as exc:
        raise MessageError(f"batch has no canonical encoding: {exc}") from exc
    return tuple(batch)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Proposal:
    """The round's proposer offers `batch` on top of `prev_hash`; valid_round ≥ 0 re-proposes a value
    that had 2f+1 matching reveals in that round (Tendermint's validValue), −1 otherwise."""

    height: int
    round: int
    batch: tuple
    prev_hash: bytes
    valid_round: int
    validator: NodeId
    signature: bytes = b""

    mtype = MessageType.PROPOSAL

    def signed_fields(self) -> dict:
        return {
            "h": self.height, "r": self.round, "batch": list(self.batch),
            "prev": self.prev_hash, "vr": self.valid_round, "from": self.validator,
        }

    def signing_bytes(self, network_id: str) -> bytes:
        return _signing_bytes(network_id, self.mtype, self.signed_fields())

    def to_wire(self) -> dict:
        return {"v": WIRE_VERSION, "t": int(self.mtype), **self.signed_fields(), "sig": self.signature}

    @classmethod
    def from_wire(cls, obj: dict) -> Proposal:
        height, round_ = _int(obj, "h", 0, MAX_HEIGHT), _int(obj, "r", 0, MAX_ROUND)
        valid_round = _int(obj, "vr", -1, round_ - 1)
        validator, signature = _signer(obj)
        return cls(height, round_, _batch(obj), _hash(obj, "prev"), valid_round, validator, signature)


@dataclass(frozen=True, slots=True)
class Commitment:
    """A sealed prevote: commitment_hash(candidate, nonce, validator, height, round)."""

    height: int
    round: int
    commitment: bytes
    validator: NodeId
    signature: bytes = b""

    mtype = MessageType.COMMITMENT

    def signed_fields(self) -> dict:
        return {"h": self.height, "r": self.round, "c": self.commitment, "from": self.validator}

    def signing_bytes(self, network_id: str) -> bytes:
        return _signing_bytes(network_id, self.mtype, self.signed_fields())

    def to_wire(self) -> dict:
        return {"v": WIRE_VERSION, "t": int(self.mtype), **self.signed_fields(), "sig": self.signature}

    @classmethod
    def from_wire(cls, obj: dict) -> Commitment:
        height, round_ = _int(obj, "h", 0, MAX_HEIGHT), _int(obj, "r", 0, MAX_ROUND)
        validator, signature = _signer(obj)
        return cls(height, round_, _hash(obj, "c"), validator, signature)


@dataclass(frozen=True, slots=True)
class Reveal:
    """Opens a commitment: the candidate hash this validator computed (or NIL) and its nonce."""

    height: int
    round: int
    candidate: bytes
    nonce: bytes
    validator: NodeId
    signature: bytes = b""

    mtype = MessageType.REVEAL

    def opens(self, commitment: Commitment) -> bool:
        return commitment.commitment == commitment_hash(
            self.candidate, self.nonce, self.validator, self.height, self.round
        )

    def signed_fields(self) -> dict:
        return {"h": self.height, "r": self.round, "cand": self.candidate, "nonce": self.nonce, "from": self.validator}

    def signing_bytes(self, network_id: str) -> bytes:
        return _signing_bytes(network_id, self.mtype, self.signed_fields())

    def to_wire(self) -> dict:
        return {"v": WIRE_VERSION, "t": int(self.mtype), **self.signed_fields(), "sig": self.signature}

    @classmethod
    def from_wire(cls, obj: dict) -> Reveal:
        height, round_ = _int(obj, "h", 0, MAX_HEIGHT), _int(obj, "r", 0, MAX_ROUND)
        validator, signature = _signer(obj)
        return cls(height, round_, _hash(obj, "cand", nil_ok=True), _hash(obj, "nonce"), validator, signature)


@dataclass(frozen=True, slots=True)
class Precommit:
    """A vote to certify `value` (a candidate Primary hash) at (height, round), or NIL."""

    height: int
    round: int
    value: bytes
    validator: NodeId
    signature: bytes = b""

    mtype = MessageType.PRECOMMIT

    def signed_fields(self) -> dict:
        return {"h": self.height, "r": self.round, "hash": self.value, "from": self.validator}

    def signing_bytes(self, network_id: str) -> bytes:
        return precommit_signing_bytes(network_id, self.height, self.round, self.value)

    def to_wire(self) -> dict:
        return {"v": WIRE_VERSION, "t": int(self.mtype), **self.signed_fields(), "sig": self.signature}

    @classmethod
    def from_wire(cls, obj: dict) -> Precommit:
        height, round_ = _int(obj, "h", 0, MAX_HEIGHT), _int(obj, "r", 0, MAX_ROUND)
        validator, signature = _signer(obj)
        return cls(height, round_, _hash(obj, "hash", nil_ok=True), validator, signature)


@dataclass(frozen=True, slots=True)
class Decision:
    """Catch-up for a validator left behind: a decided height's batch and its quorum certificate.
    Not signed by its sender: the certificate is the proof, checked against the height's validators."""

    height: int
    batch: tuple
    prev_hash: bytes
    certificate: QuorumCertificate

    mtype = MessageType.DECISION

    @property
    def validator(self) -> None:  # no single author
        return None

    def to_wire(self) -> dict:
        return {
            "v": WIRE_VERSION, "t": int(self.mtype), "h": self.height, "batch": list(self.batch),
            "prev": self.prev_hash, "qc": self.certificate.to_wire(),
        }

    @classmethod
    def from_wire(cls, obj: dict) -> Decision:
        height = _int(obj, "h", 0, MAX_HEIGHT)
        try:
            certificate = QuorumCertificate.from_wire(obj.get("qc"))
        except CertificateError as exc:
            raise MessageError(f"decision certificate is malformed: {exc}") from exc
        if certificate.height != height:
            raise MessageError("decision certificate is for another height")
        return cls(height, _batch(obj), _hash(obj, "prev"), certificate)


@dataclass(frozen=True, slots=True)
class Status:
    """"I am at `height`": sent to a peer that is ahead, which answers with the decisions we miss.
    Unsigned: it asks for public, self-proving data, and answers are rate-limited per sender."""

    height: int

    mtype = MessageType.STATUS

    def to_wire(self) -> dict:
        return {"v": WIRE_VERSION, "t": int(self.mtype), "h": self.height}

    @classmethod
    def from_wire(cls, obj: dict) -> Status:
        return cls(_int(obj, "h", 0, MAX_HEIGHT))


VoteMessage = Union[Proposal, Commitment, Reveal, Precommit]
Message = Union[Proposal, Commitment, Reveal, Precommit, Decision, Status]
_PARSERS = {
    MessageType.PROPOSAL: Proposal.from_wire,
    MessageType.COMMITMENT: Commitment.from_wire,
    MessageType.REVEAL: Reveal.from_wire,
    MessageType.PRECOMMIT: Precommit.from_wire,
    MessageType.DECISION: Decision.from_wire,
    MessageType.STATUS: Status.from_wire,
}
MESSAGE_CLASSES = (Proposal, Commitment, Reveal, Precommit, Decision, Status)
VOTE_CLASSES = (Proposal, Commitment, Reveal, Precommit)


def parse_message(raw: Any) -> Message:
    """A message object from its wire form (a map, or msgpack bytes of one); MessageError otherwise."""
    if isinstance(raw, MESSAGE_CLASSES):
        return raw
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = decode(bytes(raw), max_size=MAX_MESSAGE_BYTES)
        except EncodingError as exc:
            raise MessageError(f"undecodable message: {exc}") from exc
    if not isinstance(raw, dict):
        raise MessageError(f"a consensus message is a map, got {type(raw).__name__}")
    if raw.get("v") != WIRE_VERSION:
        raise MessageError(f"message version {raw.get('v')!r} is not supported (this build speaks {WIRE_VERSION})")
    mtype = raw.get("t")
    if not isinstance(mtype, int) or isinstance(mtype, bool) or mtype not in MessageType._value2member_map_:
        raise MessageError(f"unknown message type {mtype!r}")
    return _PARSERS[MessageType(mtype)](raw)


def sign(message: VoteMessage, key: NodeKey, network_id: str) -> VoteMessage:
    """`message` signed by `key` (whose node id must be the message's validator)."""
    if message.validator != key.node_id:
        raise ValueError("a node signs only messages naming itself as validator")
    fields = {name: getattr(message, name) for name in message.__slots__ if name != "signature"}
    return type(message)(**fields, signature=key.sign_for(network_id, message.signing_bytes(network_id)))


def verify_message(message: VoteMessage, network_id: str) -> bool:
    """True iff the message carries its validator's valid signature. Never raises."""
    return verify(message.validator, message.signing_bytes(network_id), message.signature, network_id)
