"""Canonical msgpack encoding and hashing: the bytes every node must compute identically.

Anything that is signed or hashed goes through `canonical()`: map keys are sorted (by their own
canonical bytes), floats are refused (use fixed-point integers), and only msgpack's plain types are
allowed (None, bool, int, str, bytes, list/tuple, dict). Decoding with `decode()` is strict: it
refuses oversized input, non-canonical bytes are *not* refused by decode (use `is_canonical`) so that
a receiver can count them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

HASH_SIZE = 32  # BLAKE2b-256 digests everywhere


class EncodingError(ValueError):
    """Raised for values that have no canonical encoding, or bytes that do not decode."""


def _normalise(value: Any, depth: int = 0) -> Any:
    if depth > 64:
        raise EncodingError("value nested deeper than 64 levels")
    if value is None or isinstance(value, (bool, bytes, str)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise EncodingError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        raise EncodingError("floats have no canonical encoding; use fixed-point integers")
    if isinstance(value, (list, tuple)):
        return [_normalise(v, depth + 1) for v in value]
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int, bytes)) or isinstance(k, bool):
                raise EncodingError(f"map key {k!r} must be str, int or bytes")
            items.append((_pack(_normalise(k, depth + 1)), k, _normalise(v, depth + 1)))
        items.sort(key=lambda item: item[0])
        return _SortedMap((k, v) for _, k, v in items)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise EncodingError(f"type {type(value).__name__} has no canonical encoding")


class _SortedMap(dict):
    """A dict whose insertion order is the canonical key order (msgpack keeps insertion order)."""


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=False)


def canonical(value: Any) -> bytes:
    """The canonical msgpack bytes of `value` (sorted keys, no floats)."""
    return _pack(_normalise(value))


def decode(data: bytes, *, max_size: int = 1 << 20) -> Any:
    """Decode msgpack bytes strictly: bounded size, str/bytes kept apart, no ext types.

    Raises EncodingError for anything malformed, so callers can drop and count it.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise EncodingError(f"{len(data)} bytes exceed the limit of {max_size}")
    try:
        return msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=False,
            use_list=True,
            ext_hook=_refuse_ext,
        )
    except EncodingError:
        raise
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise EncodingError(f"malformed msgpack: {exc}") from exc
    except (TypeError, UnicodeDecodeError) as exc:  # e.g. unhashable map key, bad utf-8
        raise EncodingError(f"malformed msgpack: {exc}") from exc


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"msgpack extension type {code} is not allowed")


def is_canonical(data: bytes) -> bool:
    """True when `data` decodes and re-encodes to the very same bytes."""
    try:
        return canonical(decode(data)) == bytes(data)
    except EncodingError:
        return False


def digest(data: bytes, *, person: bytes = b"") -> bytes:
    """BLAKE2b-256 of `data`, optionally domain-separated with a personalisation (≤ 16 bytes)."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE, person=person).digest()


def hash_value(value: Any, *, person: bytes = b"") -> bytes:
    """BLAKE2b-256 of the canonical encoding of `value`."""
    return digest(canonical(value), person=person)
