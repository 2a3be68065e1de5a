"""The data channel's wire format and reassembly — pure, no I/O.

Inside each TLS 1.3 connection (which gives confidentiality and integrity; nothing here is crypto)
a channel direction is a sequence of chunks, each with a 13-byte header:

    seq (u64, big-endian) | flags (u8) | length (u32) | payload (length bytes)

(In a --pq network every chunk but STRIPE_END is sealed by `channel_pq`: its payload is the
ciphertext plus a `TAG_BYTES` tag, and `length` counts the tag; the layout is the same.)

A message is split into chunks of at most `CHUNK_BYTES`; its last chunk carries END. `seq` numbers
every chunk of one direction of one channel, so chunks spread over k striped connections are put
back in order by `Reassembler`. CLOSE (a chunk with its own seq) ends the direction cleanly after
every earlier message; STRIPE_END (no seq meaning) says a connection carries nothing more, so its
end-of-file is not mistaken for a broken path.

The open request and answer travel over the admitted libp2p connection (an rpc): each side sends
its ephemeral TLS certificate (DER) and its node key's signature over `binding_payload`, the way
libp2p's TLS spec binds a certificate key to a peer id. In a --pq network the request also carries
an ML-KEM-768 public key (`kem`) and the answer its ciphertext (`ct`), and the signatures cover
them (`channel_pq.open_binding` / `answer_binding`); a classic network's messages have neither
field, byte for byte as before.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import MAX_SIGNATURE_SIZE, SIGNATURE_SIZES

HEADER = struct.Struct("!QBI")
HEADER_BYTES = HEADER.size  # 13
CHUNK_BYTES = 1024 * 1024  # largest chunk payload; a peer announcing more is broken or hostile

END = 0x01  # last chunk of a message
CLOSE = 0x02  # the sender closed the channel; nothing follows in this direction
STRIPE_END = 0x04  # nothing more on this connection (its EOF is clean)
_KNOWN_FLAGS = END | CLOSE | STRIPE_END

OPEN_VERSION = 1
CHANNEL_ID_BYTES = 16
MAX_CERT_BYTES = 4096
MAX_STRIPES = 16
BINDING_CONTEXT = "mycelium-datachannel-tls/1"
TAG_BYTES = 16  # the inner layer's AEAD tag on each sealed chunk (--pq networks)
KEM_PUBLIC_BYTES = 1184  # ML-KEM-768 encapsulation key, in a PQ open request
KEM_CIPHERTEXT_BYTES = 1088  # ML-KEM-768 ciphertext, in a PQ open answer


class WireError(Exception):
    """The peer sent something the data channel protocol forbids (the connection is dropped)."""


def encode_header(seq: int, flags: int, length: int) -> bytes:
    return HEADER.pack(seq, flags, length)


def decode_header(raw: bytes | bytearray | memoryview, tag: int = 0) -> tuple[int, int, int]:
    """(seq, flags, length) of one chunk header; WireError for unknown flags or an oversized chunk.
    `tag` is the inner layer's tag size on sealed chunks (0 for a classic channel)."""
    seq, flags, length = HEADER.unpack(raw)
    if flags & ~_KNOWN_FLAGS:
        raise WireError(f"unknown chunk flags {flags:#x}")
    if flags & STRIPE_END:
        if length:
            raise WireError("a STRIPE_END chunk carries no payload")
        return seq, flags, length
    if length > CHUNK_BYTES + tag:
        raise WireError(f"chunk of {length} bytes exceeds {CHUNK_BYTES + tag}")
    if length < tag:
        raise WireError(f"a sealed chunk of {length} bytes is shorter than its {tag}-byte tag")
    if flags & CLOSE and length != tag:
        raise WireError("a CLOSE chunk carries no payload")
    return seq, flags, length


def split_message(message: bytes, first_seq: int) -> list[tuple[int, int, memoryview]]:
    """The chunks of one message, numbered from `first_seq` (an empty message is one END chunk)."""
    view = memoryview(message)
    if not view:
        return [(first_seq, END, view)]
    chunks = []
    for i, start in enumerate(range(0, len(view), CHUNK_BYTES)):
        end = start + CHUNK_BYTES
        chunks.append((first_seq + i, END if end >= len(view) else 0, view[start:end]))
    return chunks


class Closed:
    """Returned by `Reassembler.push` in place of a message: the sender closed the channel."""

    def __repr__(self) -> str:
        return "CLOSED"


CLOSED = Closed()


class Reassembler:
    """Puts chunks from k connections back into whole messages, in order, with bounded memory.

    Each connection delivers its chunks in increasing seq (the sender's writers take chunks from one
    FIFO), so the chunk the receiver waits for is always at the head of some connection: a reader
    holding a chunk beyond the window waits (`admits`), and that wait can never block the chunk
    that would let it in. Memory: at most `window` chunks pending plus one partial message.
    """

    def __init__(self, *, window: int, max_message: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1 chunk")
        self.window = window
        self.max_message = max_message
        self.next_seq = 0
        self.closed = False
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def admits(self, seq: int) -> bool:
        """May a chunk numbered `seq` be pushed now (without exceeding the window)?"""
        return seq < self.next_seq + self.window

    def push(self, seq: int, flags: int, payload: bytes) -> list[bytes | Closed]:
        """Add one chunk; returns the messages (and CLOSED) it completes, in order."""
        if self.closed:
            raise WireError(f"chunk {seq} after the channel was closed")
        if seq < self.next_seq or seq in self._pending:
            raise WireError(f"chunk {seq} arrived twice")
        if not self.admits(seq):
            raise WireError(f"chunk {seq} is beyond the window (next {self.next_seq}, window {self.window})")
        self._pending[seq] = (flags, payload)
        out: list[bytes | Closed] = []
        while self.next_seq in self._pending:
            flags, payload = self._pending.pop(self.next_seq)
            self.next_seq += 1
            if flags & CLOSE:
                if self._parts or self._pending:
                    raise WireError("CLOSE in the middle of a message")
                self.closed = True
                out.append(CLOSED)
                break
            self._size += len(payload)
            if self._size > self.max_message:
                raise WireError(f"message exceeds {self.max_message} bytes")
            self._parts.append(payload)
            if flags & END:
                out.append(self._parts[0] if len(self._parts) == 1 else b"".join(self._parts))
                self._parts, self._size = [], 0
        return out


# --------------------------------------------------------------------------- opening a channel


_PURPOSE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise ValueError(f"channel purpose {purpose!r} must be 1–64 of lowercase letters, digits, '_', '-', '.'")
    return purpose


def binding_payload(network_id: str, cert_der: bytes) -> bytes:
    """What a node signs to bind its ephemeral TLS certificate to its node id, for one network."""
    return canonical([BINDING_CONTEXT, network_id, cert_der])


@dataclass(frozen=True, slots=True)
class OpenRequest:
    purpose: str
    stripes: int
    cert: bytes  # the opener's TLS certificate, DER
    sig: bytes  # the opener's node-key signature over binding_payload(network, cert) (PQ: open_binding)
    kem: bytes | None = None  # PQ networks: the opener's ephemeral ML-KEM-768 public key

    def encode(self) -> bytes:
        msg = {"v": OPEN_VERSION, "purpose": self.purpose, "stripes": self.stripes, "cert": self.cert, "sig": self.sig}
        if self.kem is not None:
            msg["kem"] = self.kem  # absent in classic networks: their wire is unchanged
        return canonical(msg)

    @classmethod
    def decode(cls, data: bytes) -> OpenRequest:
        msg = _decode_dict(data)
        if msg.get("v") != OPEN_VERSION:
            raise WireError(f"open request version {msg.get('v')!r}, expected {OPEN_VERSION}")
        purpose, stripes = msg.get("purpose"), msg.get("stripes")
        if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
            raise WireError("open request: bad purpose")
        if not isinstance(stripes, int) or isinstance(stripes, bool) or not 1 <= stripes <= MAX_STRIPES:
            raise WireError(f"open request: stripes must be 1..{MAX_STRIPES}")
        return cls(purpose, stripes, _cert(msg), _sig(msg), _optional_bytes(msg, "kem", KEM_PUBLIC_BYTES))


@dataclass(frozen=True, slots=True)
class OpenAnswer:
    """Either accepted (port, cert, sig, channel id) or refused (`refused` says why)."""

    refused: str | None = None
    port: int = 0
    cert: bytes = b""
    sig: bytes = b""
    channel_id: bytes = b""
    ct: bytes | None = None  # PQ networks: the ML-KEM-768 ciphertext to the opener's key

    def encode(self) -> bytes:
        if self.refused is not None:
            return canonical({"v": OPEN_VERSION, "refused": self.refused})
        msg = {"v": OPEN_VERSION, "port": self.port, "cert": self.cert, "sig": self.sig, "id": self.channel_id}
        if self.ct is not None:
            msg["ct"] = self.ct
        return canonical(msg)

    @classmethod
    def decode(cls, data: bytes) -> OpenAnswer:
        msg = _decode_dict(data)
        if msg.get("v") != OPEN_VERSION:
            raise WireError(f"open answer version {msg.get('v')!r}, expected {OPEN_VERSION}")
        if "refused" in msg:
            why = msg["refused"]
            return cls(refused=why[:200] if isinstance(why, str) else "unspecified")
        port, channel_id = msg.get("port"), msg.get("id")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise WireError("open answer: bad port")
        if not isinstance(channel_id, bytes) or len(channel_id) != CHANNEL_ID_BYTES:
            raise WireError("open answer: bad channel id")
        return cls(port=port, cert=_cert(msg), sig=_sig(msg), channel_id=channel_id,
                   ct=_optional_bytes(msg, "ct", KEM_CIPHERTEXT_BYTES))


def stripe_label(channel_id: bytes, direction: str, index: int) -> str:
    """The TLS server name a stripe connection asks for: which channel, which direction, which stripe.
    `direction` is "u" (the opener writes) or "d" (the acceptor writes)."""
    return f"{channel_id.hex()}-{direction}{index}"


_LABEL = re.compile(r"^([0-9a-f]{32})-([ud])([0-9]{1,2})$")


def parse_stripe_label(label: str | None) -> tuple[bytes, str, int] | None:
    if not label:
        return None
    m = _LABEL.match(label)
    if m is None or int(m.group(3)) >= MAX_STRIPES:
        return None
    return bytes.fromhex(m.group(1)), m.group(2), int(m.group(3))


def _decode_dict(data: bytes) -> dict:
    try:
        msg = decode(bytes(data), max_size=2 * MAX_CERT_BYTES + MAX_SIGNATURE_SIZE + KEM_PUBLIC_BYTES + 512)
    except EncodingError as exc:
        raise WireError(f"undecodable: {exc}") from exc
    if not isinstance(msg, dict):
        raise WireError("not a map")
    return msg


def _cert(msg: dict) -> bytes:
    cert = msg.get("cert")
    if not isinstance(cert, bytes) or not 0 < len(cert) <= MAX_CERT_BYTES:
        raise WireError("bad certificate field")
    return cert


def _optional_bytes(msg: dict, key: str, size: int) -> bytes | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes) or len(value) != size:
        raise WireError(f"bad {key} field (expected {size} bytes)")
    return value


def _sig(msg: dict) -> bytes:
    sig = msg.get("sig")
    if not isinstance(sig, bytes) or len(sig) not in SIGNATURE_SIZES:  # classic or hybrid
        raise WireError("bad signature field")
    return sig
