"""How fit one node is for each role: the per-node half of the role rule. Pure and deterministic.

`mycelium.roles.assignment` makes the set-level decision (validator-set size, who replaces whom);
this module judges a single candidate: its integer score, what (if anything) blocks it from a role,
and the short facts that `mycelium status` shows. Everything is integer arithmetic — validators
compute roles independently and must agree bit for bit.

Hysteresis lives here as *bands*: a node must clear the higher "promote" bar to gain a role and only
loses it when it falls under the lower "keep" bar, so a metric hovering at one threshold cannot make
a role flip back and forth.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mycelium.roles.profile import GIB, MIB, CapabilityProfile, Reachability

PERMILLE = 1000  # fixed-point unit of uptime ratios: 1000 = 100%


class RoleError(ValueError):
    """A candidate or role config is malformed (a bug in the caller, not a peer's fault)."""


class Role(str, Enum):
    """A node's role. Values are wire strings (they appear in the Primary): append only."""

    SCLEROTIUM = "sclerotium"  # full node: validator, always-on backbone, K3s server
    RHIZOMORPH = "rhizomorph"  # semi-node: runs workloads, relays, holds replicas; promotable
    HYPHA = "hypha"  # pure client: uses services, runs nothing

    @property
    def rank(self) -> int:
        """hypha 0 < rhizomorph 1 < sclerotium 2: a cap allows every role of rank ≤ its own."""
        return _RANK[self]

    @property
    def holds_workloads(self) -> bool:
        """Whether placement may put workloads and replicas on a node of this role (hyphae: never)."""
        return self is not Role.HYPHA

    def allows(self, role: Role) -> bool:
        """As a cap (`--max-role`): may a node capped at self take `role`?"""
        return role.rank <= self.rank


_RANK = {Role.HYPHA: 0, Role.RHIZOMORPH: 1, Role.SCLEROTIUM: 2}


@dataclass(frozen=True, slots=True)
class RoleConfig:
    """Thresholds of the role rule. Part of the network's params: every validator must use the same.

    Trust is in consensus' fixed-point units; the defaults assume `trust_full` = 1000 (full trust)
    and a neutral prior for new members around 500 — a promotion bar above the prior would stop a
    young network from ever growing its validator set.
    """

    max_validators: int = 7  # upper bound on the validator set; the set takes the largest 3f+1 ≤ this
    min_ram_sclerotium_bytes: int = 1792 * MIB  # a "2 GB" board shows ~1.8 GiB; K3s server needs ~2 GB
    min_ram_rhizomorph_bytes: int = 768 * MIB  # a "1 GB" board shows ~0.9 GiB: enough for small workloads
    min_disk_free_sclerotium_bytes: int = 2 * GIB  # Primary chain, Seeds, K3s datastore
    min_disk_free_rhizomorph_bytes: int = 1 * GIB  # images and replicas
    disk_keep_permille: int = 500  # incumbents keep their role down to 50% of the disk minimum
    uptime_promote_sclerotium_permille: int = 900  # observed uptime ≥ 90% to become a validator …
    uptime_keep_sclerotium_permille: int = 800  # … and ≥ 80% to stay one (the band is the hysteresis)
    trust_full: int = 1000  # consensus' fixed-point value of full trust (scales the score)
    trust_promote_sclerotium: int = 400  # trust needed to become a validator …
    trust_keep_sclerotium: int = 250  # … under this a validator is replaced (when a replacement exists)
    trust_promote_rhizomorph: int = 200  # trust needed to be given workloads …
    trust_keep_rhizomorph: int = 100  # … under this a rhizomorph is demoted to hypha
    battery_grace_epochs: int = 3  # an incumbent is demoted after this many consecutive epochs on battery
    swap_margin: int = 600  # a healthy validator is only displaced by a challenger scoring this much more
    max_voluntary_swaps: int = 1  # healthy validators displaced per assignment (replacing failed ones is unlimited)

    def __post_init__(self) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RoleError(f"role config {name} must be a non-negative integer, got {value!r}")
        if self.max_validators < 1:
            raise RoleError("role config max_validators must be at least 1")
        if self.trust_full < 1:
            raise RoleError("role config trust_full must be positive")
        for keep, promote in (
            ("uptime_keep_sclerotium_permille", "uptime_promote_sclerotium_permille"),
            ("trust_keep_sclerotium", "trust_promote_sclerotium"),
            ("trust_keep_rhizomorph", "trust_promote_rhizomorph"),
        ):
            if getattr(self, keep) > getattr(self, promote):
                raise RoleError(f"role config {keep} must not exceed {promote} (it is the lower hysteresis bar)")
        if self.disk_keep_permille > PERMILLE:
            raise RoleError("role config disk_keep_permille must be at most 1000")


DEFAULT_ROLE_CONFIG = RoleConfig()


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the rule knows about one member, all read from the Primary."""

    profile: CapabilityProfile
    trust: int  # consensus trust, fixed-point (RoleConfig.trust_full = full)
    cap: Role = Role.SCLEROTIUM  # the highest role its operator allows (`--max-role`)
    alive: bool = True  # the latest redundant-execution liveness verdict
    uptime_permille: int = PERMILLE  # observed uptime ratio over the Primary's window (1000 = 100%)
    # Consecutive epochs (this one included) the Primary has recorded this node on battery. None means
    # "not tracked": an on-battery incumbent is then treated as past its grace period straight away.
    battery_epochs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.profile, CapabilityProfile):
            raise RoleError(f"candidate profile must be a CapabilityProfile, got {type(self.profile).__name__}")
        if not isinstance(self.trust, int) or isinstance(self.trust, bool) or self.trust < 0:
            raise RoleError(f"candidate trust must be a non-negative integer, got {self.trust!r}")
        if not isinstance(self.cap, Role):
            raise RoleError(f"candidate cap must be a Role, got {self.cap!r}")
        if not isinstance(self.alive, bool):
            raise RoleError("candidate alive must be a boolean")
        up = self.uptime_permille
        if not isinstance(up, int) or isinstance(up, bool) or not 0 <= up <= PERMILLE:
            raise RoleError(f"candidate uptime_permille must be an integer in [0, 1000], got {up!r}")
        be = self.battery_epochs
        if be is not None and (not isinstance(be, int) or isinstance(be, bool) or be < 0):
            raise RoleError(f"candidate battery_epochs must be None or a non-negative integer, got {be!r}")


# --------------------------------------------------------------------------- score


_REACH_BONUS = {Reachability.DIRECT: 1000, Reachability.UNKNOWN: 400, Reachability.RELAY: 0}


def score(c: Candidate, config: RoleConfig = DEFAULT_ROLE_CONFIG) -> int:
    """How good a validator `c` would be; higher is better. Integer, bounded, coarse on purpose:

        4 × uptime‰                               (0 … 4000)  being there is what matters most
      + 2 × trust‰   (trust scaled to 0 … 1000)   (0 … 2000)
      + reachability: direct 1000, unknown 400, relay 0
      + 25 × RAM in whole GiB, at most 32         (0 … 800)
      + 20 × cores, at most 16                    (0 … 320)
      + 50 × log2(free disk GiB + 1), at most 10  (0 … 500)
      − 500 if the device has a battery (laptops sleep and roam)
      − (load per core − 1.0) × 500, only above 1.0, at most 500

    Available RAM is not used: it fluctuates, and roles must not. Fluctuating terms (disk, load) move
    the score by less than `swap_margin`, so they alone never swap a validator out and back.
    """
    p = c.profile
    trust_pm = min(c.trust, config.trust_full) * PERMILLE // config.trust_full
    disk_term = min((p.disk_free_bytes // GIB + 1).bit_length() - 1, 10)
    load_per_core_milli = p.load_1m_milli // p.cores
    load_penalty = min(500, max(0, load_per_core_milli - 1000) // 2)
    return (
        4 * c.uptime_permille
        + 2 * trust_pm
        + _REACH_BONUS[p.reachability]
        + 25 * min(p.ram_total_bytes // GIB, 32)
        + 20 * min(p.cores, 16)
        + 50 * disk_term
        - (500 if p.battery_present else 0)
        - load_penalty
    )


# --------------------------------------------------------------------------- blockers


def battery_blocks(c: Candidate, *, incumbent: bool, config: RoleConfig) -> bool:
    """On battery blocks a promotion at once, but an incumbent only after `battery_grace_epochs`."""
    if not c.profile.on_battery:
        return False
    if not incumbent:
        return True
    epochs = config.battery_grace_epochs if c.battery_epochs is None else c.battery_epochs
    return epochs >= config.battery_grace_epochs


def next_battery_epochs(previous: int | None, profile: CapabilityProfile, *, limit: int = 1 << 16) -> int:
    """`Candidate.battery_epochs` for this epoch, from last epoch's count and this epoch's profile:
    one more while on battery, 0 once plugged in (bounded so the Primary's value stays small)."""
    if not profile.on_battery:
        return 0
    return min((previous or 0) + 1, limit)


def sclerotium_blockers(c: Candidate, *, incumbent: bool, config: RoleConfig = DEFAULT_ROLE_CONFIG) -> list[str]:
    """Why `c` may not become (incumbent=False) or stay (incumbent=True) a validator; [] = fit.

    Liveness is judged only for promotions: a dead incumbent is the assignment's business (it keeps
    its seat until someone can take it)."""
    why: list[str] = []
    p = c.profile
    if not c.cap.allows(Role.SCLEROTIUM):
        why.append(f"capped at {c.cap.value} by operator")
    if not incumbent and not c.alive:
        why.append("not alive")
    if battery_blocks(c, incumbent=incumbent, config=config):
        why.append("on battery")
    if p.ram_total_bytes < config.min_ram_sclerotium_bytes:
        why.append(f"{_bytes(p.ram_total_bytes)} RAM, validators need {_bytes(config.min_ram_sclerotium_bytes)}")
    disk_min = _disk_bar(config.min_disk_free_sclerotium_bytes, incumbent, config)
    if p.disk_free_bytes < disk_min:
        why.append(f"{_bytes(p.disk_free_bytes)} free disk, validators need {_bytes(disk_min)}")
    up_min = config.uptime_keep_sclerotium_permille if incumbent else config.uptime_promote_sclerotium_permille
    if c.uptime_permille < up_min:
        why.append(f"{_percent(c.uptime_permille)} uptime, validators need {_percent(up_min)}")
    trust_min = config.trust_keep_sclerotium if incumbent else config.trust_promote_sclerotium
    if c.trust < trust_min:
        why.append(f"trust {c.trust} under {trust_min}")
    return why


def rhizomorph_blockers(c: Candidate, *, incumbent: bool, config: RoleConfig = DEFAULT_ROLE_CONFIG) -> list[str]:
    """Why `c` may not become (incumbent=False) or stay (incumbent=True) a workload holder; [] = fit.

    A node that holds workloads now (rhizomorph or sclerotium) is the incumbent; a dead incumbent
    keeps its role — placement already avoids dead nodes, and churning roles would not help."""
    why: list[str] = []
    p = c.profile
    if not c.cap.allows(Role.RHIZOMORPH):
        why.append(f"capped at {c.cap.value} by operator")
    if not incumbent and not c.alive:
        why.append("not alive")
    if battery_blocks(c, incumbent=incumbent, config=config):
        why.append("on battery")
    if p.ram_total_bytes < config.min_ram_rhizomorph_bytes:
        why.append(f"{_bytes(p.ram_total_bytes)} RAM, workloads need {_bytes(config.min_ram_rhizomorph_bytes)}")
    disk_min = _disk_bar(config.min_disk_free_rhizomorph_bytes, incumbent, config)
    if p.disk_free_bytes < disk_min:
        why.append(f"{_bytes(p.disk_free_bytes)} free disk, workloads need {_bytes(disk_min)}")
    trust_min = config.trust_keep_rhizomorph if incumbent else config.trust_promote_rhizomorph
    if c.trust < trust_min:
        why.append(f"trust {c.trust} under {trust_min}")
    return why


def _disk_bar(minimum: int, incumbent: bool, config: RoleConfig) -> int:
    return minimum * config.disk_keep_permille // PERMILLE if incumbent else minimum


# --------------------------------------------------------------------------- facts for status


_REACH_TEXT = {
    Reachability.DIRECT: "direct address",
    Reachability.RELAY: "relay only",
    Reachability.UNKNOWN: "reachability unknown",
}


def facts(c: Candidate) -> str:
    """The deciding facts in one line, e.g. "8 GiB RAM, direct address, 99% uptime"."""
    p = c.profile
    parts = [f"{_bytes(p.ram_total_bytes)} RAM", _REACH_TEXT[p.reachability], f"{_percent(c.uptime_permille)} uptime"]
    if p.on_battery:
        parts.append("on battery")
    if not c.alive:
        parts.append("not alive")
    return ", ".join(parts)


def short_id(node_id: str) -> str:
    """A node id short enough for a status line ("12D3KooW…x7Yq2a")."""
    return node_id if len(node_id) <= 16 else f"{node_id[:8]}…{node_id[-6:]}"


def _bytes(n: int) -> str:
    if n >= GIB:
        whole, rest = divmod(n * 10 // GIB, 10)
        return f"{whole} GiB" if rest == 0 else f"{whole}.{rest} GiB"
    return f"{n // MIB} MiB"


def _percent(permille: int) -> str:
    return f"{permille // 10}%"
