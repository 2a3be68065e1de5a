"""The replication stream's messages on the data channel (msgpack lists, type tag first; append-only).

    ["hello", name, generation]                 primary -> backup, first message of a channel
    ["ack", generation, epoch]                  backup -> primary (also the reply to hello: its committed epoch)
    ["part", generation, epoch, base, part, parts, digest, [[index, bytes], ...]]
    ["bye"]                                     either side, before closing on purpose

Decoding is strict: anything else raises WireError, which the shell counts and drops.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from mycelium.mesh.channel import MAX_MESSAGE_BYTES
from mycelium.ram.epochs import EpochAck, EpochPart

MAX_NAME = 253


class WireError(ValueError):
    """A message that is not one of ours (malformed, wrong types, oversized)."""


@dataclass(frozen=True, slots=True)
class Hello:
    name: str
    generation: int


@dataclass(frozen=True, slots=True)
class Bye:
    pass


Message = Hello | EpochAck | EpochPart | Bye


def encode(msg: Message) -> bytes:
    if isinstance(msg, Hello):
        body = ["hello", msg.name, msg.generation]
    elif isinstance(msg, EpochAck):
        body = ["ack", msg.generation, msg.epoch]
    elif isinstance(msg, EpochPart):
        body = ["part", msg.generation, msg.epoch, msg.base, msg.part, msg.parts, msg.digest,
                [[i, d] for i, d in msg.pages]]
    elif isinstance(msg, Bye):
        body = ["bye"]
    else:
        raise TypeError(f"not a replication message: {msg!r}")
    return msgpack.packb(body, use_bin_type=True)


def _int(v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
        raise WireError(f"expected an integer, got {type(v).__name__}")
    return v


def decode(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes is over the limit")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError(f"not msgpack: {exc}") from exc
    if not isinstance(body, list) or not body or not isinstance(body[0], str):
        raise WireError("expected a list with a type tag")
    tag = body[0]
    if tag == "hello" and len(body) == 3 and isinstance(body[1], str) and len(body[1]) <= MAX_NAME:
        return Hello(body[1], _int(body[2]))
    if tag == "ack" and len(body) == 3:
        return EpochAck(_int(body[1]), _int(body[2]))
    if tag == "bye" and len(body) == 1:
        return Bye()
    if tag == "part" and len(body) == 8 and isinstance(body[6], bytes) and isinstance(body[7], list):
        pages = []
        for item in body[7]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], bytes)):
                raise WireError("a page is [index, bytes]")
            pages.append((_int(item[0]), item[1]))
        return EpochPart(_int(body[1]), _int(body[2]), _int(body[3]), _int(body[4]), _int(body[5]), body[6],
                         tuple(pages))
    raise WireError(f"unknown or malformed message {tag!r}")
