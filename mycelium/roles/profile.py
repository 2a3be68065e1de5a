"""A node's capability profile: what the device can do, as published in its Latent entries.

Pure: building, encoding, validating and comparing profiles. Measuring one is `mycelium.roles.probe`
(the only module of this package that touches the OS). Every number is an integer — the profile is
signed and hashed, and floats have no canonical encoding — so the 1-minute load average is carried
as thousandths (`load_1m_milli`: a load of 1.25 is 1250).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

PROFILE_VERSION = 1

GIB = 1 << 30
MIB = 1 << 20

# Bounds of from_wire(): generous for real hardware, tight enough that garbage is refused.
MAX_CORES = 4096
MAX_BYTES = 1 << 60  # an exbibyte: no consumer device comes close
MAX_UPTIME_S = 1 << 40  # ~35,000 years
MAX_LOAD_MILLI = 10_000_000  # a load average of 10,000
_ARCH_RE = re.compile(r"^[a-z0-9_.-]{1,32}$")


class ProfileError(ValueError):
    """A profile received from a peer (or built locally) is malformed or out of bounds."""


class Reachability(str, Enum):
    """How peers reach this node, as the mesh observed it. Values are wire strings: append only."""

    DIRECT = "direct"  # a public or LAN address that peers dialled successfully
    RELAY = "relay"  # only reachable through a circuit relay
    UNKNOWN = "unknown"  # the mesh has not found out yet


@dataclass(frozen=True, slots=True)
class CapabilityProfile:
    cores: int  # logical CPUs
    ram_total_bytes: int
    ram_available_bytes: int  # fluctuates: used for placement, never for roles
    disk_free_bytes: int  # free bytes on the file system holding the state dir
    arch: str  # normalised machine name: "x86_64", "aarch64", "armv7l", …
    battery_present: bool  # the device has a battery (a laptop, a phone)
    on_battery: bool  # running from the battery right now (not plugged in)
    uptime_s: int  # seconds since the device booted
    load_1m_milli: int  # 1-minute load average × 1000
    reachability: Reachability

    def __post_init__(self) -> None:
        _check_int("cores", self.cores, 1, MAX_CORES)
        _check_int("ram_total_bytes", self.ram_total_bytes, 0, MAX_BYTES)
        _check_int("ram_available_bytes", self.ram_available_bytes, 0, MAX_BYTES)
        _check_int("disk_free_bytes", self.disk_free_bytes, 0, MAX_BYTES)
        _check_int("uptime_s", self.uptime_s, 0, MAX_UPTIME_S)
        _check_int("load_1m_milli", self.load_1m_milli, 0, MAX_LOAD_MILLI)
        if not isinstance(self.arch, str) or not _ARCH_RE.match(self.arch):
            raise ProfileError(f"arch {self.arch!r} must be 1–32 characters of a-z, 0-9, '_', '.', '-'")
        if not isinstance(self.battery_present, bool) or not isinstance(self.on_battery, bool):
            raise ProfileError("battery_present and on_battery must be booleans")
        if self.on_battery and not self.battery_present:
            raise ProfileError("a device without a battery cannot run on battery")
        if not isinstance(self.reachability, Reachability):
            raise ProfileError(f"reachability must be a Reachability, got {self.reachability!r}")

    def to_wire(self) -> dict[str, Any]:
        """A map of plain types for `mycelium.encoding.canonical` (short keys: it is gossiped often)."""
        return {
            "v": PROFILE_VERSION,
            "cores": self.cores,
            "ram": self.ram_total_bytes,
            "ram_avail": self.ram_available_bytes,
            "disk_free": self.disk_free_bytes,
            "arch": self.arch,
            "bat": self.battery_present,
            "on_bat": self.on_battery,
            "uptime_s": self.uptime_s,
            "load_m": self.load_1m_milli,
            "reach": self.reachability.value,
        }

    @classmethod
    def from_wire(cls, obj: object) -> CapabilityProfile:
        """Validate a decoded profile; ProfileError says which field is wrong (drop and count it)."""
        if not isinstance(obj, dict):
            raise ProfileError(f"a capability profile must be a map, got {type(obj).__name__}")
        version = obj.get("v")
        if isinstance(version, bool) or version != PROFILE_VERSION:
            raise ProfileError(f"capability profile version {version!r} is not supported (this build reads 1)")
        expected = _WIRE_FIELDS
        missing = expected - obj.keys()
        if missing:
            raise ProfileError(f"capability profile lacks {', '.join(sorted(map(str, missing)))}")
        extra = obj.keys() - expected
        if extra:
            raise ProfileError(f"capability profile has unknown fields {', '.join(sorted(map(repr, extra)))}")
        try:
            reach = Reachability(obj["reach"])
        except ValueError as exc:
            raise ProfileError(f"reachability {obj['reach']!r} is not one of direct, relay, unknown") from exc
        return cls(
            cores=obj["cores"],
            ram_total_bytes=obj["ram"],
            ram_available_bytes=obj["ram_avail"],
            disk_free_bytes=obj["disk_free"],
            arch=obj["arch"],
            battery_present=obj["bat"],
            on_battery=obj["on_bat"],
            uptime_s=obj["uptime_s"],
            load_1m_milli=obj["load_m"],
            reachability=reach,
        )


_WIRE_FIELDS = frozenset(
    {"v", "cores", "ram", "ram_avail", "disk_free", "arch", "bat", "on_bat", "uptime_s", "load_m", "reach"}
)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProfileError(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ProfileError(f"{name} = {value} is outside [{low}, {high}]")


# --------------------------------------------------------------------------- when to republish


@dataclass(frozen=True, slots=True)
class RepublishConfig:
    """When a freshly probed profile is different enough from the published one to gossip it again.

    Identity-like facts (cores, RAM total, arch, battery, reachability) republish on any change;
    fluctuating ones only on a large move, so a busy node does not flood the Latent spore.
    """

    ram_available_step_permille: int = 125  # republish when available RAM moves by ≥ 12.5% of total
    disk_free_step_permille: int = 100  # … when free disk moves by ≥ 10% of the published value …
    disk_free_step_min_bytes: int = 1 * GIB  # … and by at least 1 GiB (tiny disks don't chatter)
    load_step_milli_per_core: int = 500  # … when load per core moves by ≥ 0.5
    # Uptime grows every second and is never a reason by itself — except when it goes *down*,
    # which means the device rebooted (and its observed uptime history matters).


DEFAULT_REPUBLISH = RepublishConfig()


def changed_enough(
    old: CapabilityProfile | None, new: CapabilityProfile, config: RepublishConfig = DEFAULT_REPUBLISH
) -> bool:
    """True when `new` should replace the published `old` (always when nothing is published yet)."""
    if old is None:
        return True
    if (
        old.cores != new.cores
        or old.ram_total_bytes != new.ram_total_bytes
        or old.arch != new.arch
        or old.battery_present != new.battery_present
        or old.on_battery != new.on_battery
        or old.reachability != new.reachability
    ):
        return True
    if new.uptime_s < old.uptime_s:
        return True  # rebooted
    ram_step = new.ram_total_bytes * config.ram_available_step_permille // 1000
    if abs(new.ram_available_bytes - old.ram_available_bytes) >= max(ram_step, 1):
        return True
    disk_step = max(old.disk_free_bytes * config.disk_free_step_permille // 1000, config.disk_free_step_min_bytes)
    if abs(new.disk_free_bytes - old.disk_free_bytes) >= disk_step:
        return True
    load_step = config.load_step_milli_per_core * new.cores
    return abs(new.load_1m_milli - old.load_1m_milli) >= load_step
