"""Strict decoding of the small msgpack messages the mesh exchanges (handshake, peer exchange).

Same rules as `mycelium.encoding.decode` (bounded size, str/bytes kept apart, no ext types), kept
here because `encoding.decode` passes `max_buffer_size` to `msgpack.unpackb`, which msgpack 1.x
refuses, so it currently rejects every input (reported to the lead; switch back once fixed).
"""

from __future__ import annotations

from typing import Any

import msgpack

from mycelium.encoding import EncodingError


def decode_message(data: bytes, *, max_size: int) -> Any:
    """Decode one msgpack value of at most `max_size` bytes; EncodingError for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise EncodingError(f"{len(data)} bytes exceed the limit of {max_size}")
    try:
        return msgpack.unpackb(
            bytes(data), raw=False, strict_map_key=False, use_list=True, ext_hook=_refuse_ext
        )
    except EncodingError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise EncodingError(f"malformed msgpack: {exc}") from exc


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"msgpack extension type {code} is not allowed")
