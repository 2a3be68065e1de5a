"""Release versions and protocol compatibility (pure).

A release version is dotted integers ("0.1.2", at most four parts): ordered as tuples, no
pre-releases, so every validator orders releases the same way without a packaging library.

PROTOCOLS is what this build speaks on the network, as [oldest, newest] version ranges per protocol.
It is a literal (not computed) so a wheel's protocols can be read from its source without running
it (mycelium.release.wheel); a unit test keeps it equal to the modules' own constants. Two builds can
talk when, for every protocol, their ranges overlap: a release whose ranges miss those of a member
would split the network, and is refused at publish.
"""

from __future__ import annotations

from typing import Any

PROTOCOLS: dict[str, list[int]] = {
    "consensus": [1, 1],  # mycelium.consensus.messages.WIRE_VERSION
    "primary": [1, 1],  # mycelium.spores.primary.PRIMARY_VERSION
    "handshake": [1, 1],  # mycelium.mesh.membership.HANDSHAKE_VERSION
    "channel": [1, 1],  # mycelium.mesh.channel_wire.OPEN_VERSION
    "service_spec": [1, 1],  # mycelium.runtime.spec.WIRE_VERSION
    "control_api": [1, 1],  # mycelium.api.protocol.API_VERSION (the CLI of a node switches with it)
}
MAX_PARTS = 4
MAX_PART = 10**6


class VersionError(ValueError):
    """A version or a protocol table is malformed; the message says how."""


def parse_version(text: Any) -> tuple[int, ...]:
    if not isinstance(text, str) or not text:
        raise VersionError(f"a release version is text like 0.2.0, got {text!r}")
    parts = text.split(".")
    if len(parts) > MAX_PARTS or not all(p.isdigit() and len(p) <= 6 and (p == "0" or not p.startswith("0"))
                                         for p in parts):
        raise VersionError(f"release version {text!r} must be 1 to {MAX_PARTS} dotted whole numbers "
                           "(like 0.2.0; no pre-release tags)")
    return tuple(int(p) for p in parts)


def version_key(text: str) -> tuple[int, ...]:
    """Sort key: 0.2 == 0.2.0 < 0.10."""
    parts = list(parse_version(text))
    return tuple(parts + [0] * (MAX_PARTS - len(parts)))


def newer(a: str, b: str) -> bool:
    """Is version a strictly above b?"""
    return version_key(a) > version_key(b)


def check_protocols(table: Any) -> dict[str, list[int]]:
    if not isinstance(table, dict) or not table or len(table) > 32:
        raise VersionError("protocols must be a map of protocol name → [oldest, newest] (1 to 32 entries)")
    for name, span in table.items():
        if not (isinstance(name, str) and 0 < len(name) <= 32):
            raise VersionError(f"protocol name {name!r} must be text of 1 to 32 characters")
        if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
                and 0 <= span[0] <= span[1] < MAX_PART):
            raise VersionError(f"protocol {name} must be [oldest, newest] whole numbers, oldest ≤ newest")
    return table


def incompatible(a: dict[str, list[int]], b: dict[str, list[int]]) -> list[str]:
    """What keeps builds speaking `a` and `b` from talking (empty: they can): a protocol one lacks,
    or ranges that do not overlap."""
    problems = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f"{name} is spoken by only one of them")
        elif a[name][1] < b[name][0] or b[name][1] < a[name][0]:
            problems.append(f"{name} versions {a[name][0]}..{a[name][1]} and {b[name][0]}..{b[name][1]} do not overlap")
    return problems
