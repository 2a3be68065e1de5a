"""Hypothesis properties of the role rule (mycelium.roles.assignment).

What is guaranteed, precisely:
- determinism: same candidates/current → same Assignment, whatever the dict order;
- caps: no node's role exceeds its operator's cap;
- sizes: the validator set has a BFT size (1, 4, 7, … ≤ max) and is empty only if no node may validate;
- failover: a dead validator keeps its seat only if every fit challenger was promoted;
- no shrink on failures: from a settled state, liveness changes alone never reduce the set;
- no starvation: an eligible node is a rhizomorph (or sclerotium) in the first assignment where it is
  eligible, and with inputs held still, assignments settle within max_validators + 2 steps at a point
  where no fit challenger beats a healthy validator by more than the swap margin;
- hysteresis: a metric alternating between two values closer than its band never makes a role flip back.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.roles.assignment import Candidate, Role, RoleConfig, assign_roles, bft_size
from mycelium.roles.fitness import rhizomorph_blockers, sclerotium_blockers, score
from mycelium.roles.profile import GIB, MIB, CapabilityProfile, Reachability

CONFIG = RoleConfig()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ram_sizes = st.sampled_from([512 * MIB, 768 * MIB, 1792 * MIB - 1, 1792 * MIB, 4 * GIB, 16 * GIB, 64 * GIB])
disk_sizes = st.sampled_from([0, 512 * MIB, 1 * GIB, 2 * GIB, 3 * GIB, 100 * GIB])
trusts = st.one_of(st.sampled_from([0, 99, 100, 199, 200, 249, 250, 399, 400, 500, 1000]), st.integers(0, 1000))
uptimes = st.one_of(st.sampled_from([0, 799, 800, 899, 900, 1000]), st.integers(0, 1000))


@st.composite
def profiles(draw) -> CapabilityProfile:
    ram = draw(ram_sizes)
    present, on = draw(st.sampled_from([(False, False), (False, False), (True, False), (True, True)]))
    return CapabilityProfile(
        cores=draw(st.integers(1, 16)),
        ram_total_bytes=ram,
        ram_available_bytes=draw(st.integers(0, ram)),
        disk_free_bytes=draw(disk_sizes),
        arch="x86_64",
        battery_present=present,
        on_battery=on,
        uptime_s=draw(st.integers(0, 10**7)),
        load_1m_milli=draw(st.integers(0, 20_000)),
        reachability=draw(st.sampled_from(list(Reachability))),
    )


@st.composite
def candidates(draw) -> Candidate:
    return Candidate(
        profile=draw(profiles()),
        trust=draw(trusts),
        cap=draw(st.sampled_from([Role.SCLEROTIUM] * 4 + [Role.RHIZOMORPH, Role.HYPHA])),
        alive=draw(st.sampled_from([True, True, True, False])),
        uptime_permille=draw(uptimes),
        battery_epochs=draw(st.one_of(st.none(), st.integers(0, 5))),
    )


@st.composite
def worlds(draw, min_nodes: int = 1, max_nodes: int = 10):
    n = draw(st.integers(min_nodes, max_nodes))
    ids = [f"n{i:02}" for i in range(n)]
    cands = {i: draw(candidates()) for i in ids}
    current = {i: r for i in ids if (r := draw(st.one_of(st.none(), st.sampled_from(list(Role))))) is not None}
    if draw(st.booleans()):
        current["departed"] = Role.SCLEROTIUM
    return cands, current


@st.composite
def fit_worlds(draw):
    """Every node fit for every role, with scores close together: where hysteresis really matters."""
    n = draw(st.integers(2, 9))
    cands = {}
    for i in range(n):
        ram = draw(st.sampled_from([4, 8, 16])) * GIB
        profile = CapabilityProfile(
            cores=draw(st.integers(1, 8)),
            ram_total_bytes=ram,
            ram_available_bytes=ram // 2,
            disk_free_bytes=100 * GIB,
            arch="aarch64",
            battery_present=False,
            on_battery=False,
            uptime_s=1000,
            load_1m_milli=draw(st.integers(0, 2000)),
            reachability=draw(st.sampled_from(list(Reachability))),
        )
        trust, uptime = draw(st.integers(400, 1000)), draw(st.integers(900, 1000))
        cands[f"n{i:02}"] = Candidate(profile, trust=trust, uptime_permille=uptime)
    return cands, {}


def settle(cands, current, config=CONFIG, limit=None):
    roles = dict(current)
    for step in range((limit or config.max_validators + 2) + 1):
        nxt = assign_roles(cands, roles, config).roles
        if nxt == roles:
            return roles, step
        roles = dict(nxt)
    raise AssertionError(f"roles did not settle within {limit or config.max_validators + 2} steps")


def validators(roles) -> set:
    return {n for n, r in roles.items() if r is Role.SCLEROTIUM}


# --------------------------------------------------------------------------- structural properties


@SETTINGS
@given(worlds(), st.data())
def test_deterministic_whatever_the_dict_order(world, data):
    cands, current = world
    a = assign_roles(cands, current, CONFIG)
    order = data.draw(st.permutations(sorted(cands)))
    corder = data.draw(st.permutations(sorted(current)))
    b = assign_roles({n: cands[n] for n in order}, {n: current[n] for n in corder}, CONFIG)
    assert a == b
    assert assign_roles(cands, current, CONFIG) == a  # and no hidden state between calls


@SETTINGS
@given(worlds(), st.sampled_from([1, 3, 4, 6, 7, 10]))
def test_caps_sizes_and_coverage(world, max_validators):
    cands, current = world
    config = RoleConfig(max_validators=max_validators)
    result = assign_roles(cands, current, config)
    assert set(result.roles) == set(cands)  # every member gets a role, non-members none
    assert set(result.reasons) == set(cands) and all(result.reasons[n] for n in cands)
    for n, role in result.roles.items():
        assert cands[n].cap.allows(role), f"{n} exceeds its cap"
    assert set(result.validators) == validators(result.roles)
    size = len(result.validators)
    capable = any(c.cap is Role.SCLEROTIUM for c in cands.values())
    assert (size == 0) == (not capable)
    if size:
        assert size == bft_size(size) and size <= max_validators


@SETTINGS
@given(worlds())
def test_promotions_respect_fitness(world):
    """A node becomes a sclerotium only if fit (or as the sole sclerotium when nobody is); a node only
    gains workloads if fit — in particular a node on battery is never promoted."""
    cands, current = world
    result = assign_roles(cands, current, CONFIG)
    holders = {n for n in cands if current.get(n) is Role.SCLEROTIUM and cands[n].cap is Role.SCLEROTIUM}
    for n in result.validators:
        if n not in holders:
            fit = not sclerotium_blockers(cands[n], incumbent=False, config=CONFIG)
            assert fit or (not holders and len(result.validators) == 1)
    for n, role in result.roles.items():
        if role is Role.RHIZOMORPH and current.get(n) not in (Role.RHIZOMORPH, Role.SCLEROTIUM):
            assert not rhizomorph_blockers(cands[n], incumbent=False, config=CONFIG)
            assert not cands[n].profile.on_battery


@SETTINGS
@given(worlds())
def test_dead_validator_keeps_its_seat_only_when_nobody_can_take_it(world):
    cands, current = world
    result = assign_roles(cands, current, CONFIG)
    holders = {n for n in cands if current.get(n) is Role.SCLEROTIUM}
    dead_kept = [n for n in result.validators if n in holders and not cands[n].alive]
    if dead_kept:
        for n, c in cands.items():
            if n not in holders and not sclerotium_blockers(c, incumbent=False, config=CONFIG):
                assert n in result.validators, f"{n} could replace dead {dead_kept}"


@SETTINGS
@given(worlds(), st.data())
def test_liveness_changes_never_shrink_a_settled_set(world, data):
    cands, current = world
    roles, _ = settle(cands, current)
    before = validators(roles)
    flip = data.draw(st.sets(st.sampled_from(sorted(cands))))
    changed = {n: replace(c, alive=(not c.alive) if n in flip else c.alive) for n, c in cands.items()}
    after = assign_roles(changed, roles, CONFIG).validators
    assert len(after) >= len(before)


@SETTINGS
@given(worlds())
def test_settles_and_nobody_is_starved(world):
    cands, current = world
    roles, _ = settle(cands, current)  # raises if it takes more than max_validators + 2 steps
    healthy = [
        n
        for n in validators(roles)
        if cands[n].alive and not sclerotium_blockers(cands[n], incumbent=True, config=CONFIG)
    ]
    for n, c in cands.items():
        if n in validators(roles):
            continue
        if not rhizomorph_blockers(c, incumbent=False, config=CONFIG):
            assert roles[n] is Role.RHIZOMORPH  # eligible for workloads → has them
        if healthy and not sclerotium_blockers(c, incumbent=False, config=CONFIG):
            weakest = min(score(cands[v], CONFIG) for v in healthy)
            assert score(c, CONFIG) <= weakest + CONFIG.swap_margin


def test_replacing_a_dead_validator_regression():
    """Shrunk shape: 4 settled validators, one dies, one fit spare → the spare replaces it, size stays."""
    p = CapabilityProfile(4, 8 * GIB, 4 * GIB, 100 * GIB, "x86_64", False, False, 100, 0, Reachability.DIRECT)
    cands = {f"n{i}": Candidate(p, trust=500) for i in range(5)}
    roles, _ = settle(cands, {})
    (spare,) = [n for n, r in roles.items() if r is Role.RHIZOMORPH]
    victim = sorted(validators(roles))[0]
    cands[victim] = replace(cands[victim], alive=False)
    result = assign_roles(cands, roles, CONFIG)
    assert validators(result.roles) == validators(roles) - {victim} | {spare}


# --------------------------------------------------------------------------- hysteresis


# (metric, lower value, upper value) pairs that straddle a threshold by less than its band
HOVERS = {
    "uptime": [(795, 805), (890, 910), (850, 930), (760, 840)],
    "trust": [(95, 105), (190, 210), (240, 260), (390, 410), (230, 320)],
    "disk": [(900 * MIB, 1100 * MIB), (1900 * MIB, 2100 * MIB), (450 * MIB, 600 * MIB)],
    "load": [(0, 20_000), (3_000, 9_000)],
    "ram_available": [(0, 4 * GIB)],
    "battery": [(0, 1)],  # unplugged for one epoch at a time: under the grace period
}


def hovered(c: Candidate, metric: str, value: int) -> Candidate:
    p = c.profile
    if metric == "uptime":
        return replace(c, uptime_permille=value)
    if metric == "trust":
        return replace(c, trust=value)
    if metric == "disk":
        return replace(c, profile=replace(p, disk_free_bytes=value))
    if metric == "load":
        return replace(c, profile=replace(p, load_1m_milli=value))
    if metric == "ram_available":
        return replace(c, profile=replace(p, ram_available_bytes=min(value, p.ram_total_bytes)))
    on = bool(value)
    return replace(c, profile=replace(p, battery_present=True, on_battery=on), battery_epochs=1 if on else 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(worlds(min_nodes=2), fit_worlds()), st.data())
def test_a_metric_hovering_at_a_threshold_does_not_flip_roles_back(world, data):
    cands, current = world
    target = data.draw(st.sampled_from(sorted(cands)))
    metric = data.draw(st.sampled_from(sorted(HOVERS)))
    low, high = data.draw(st.sampled_from(HOVERS[metric]))
    start_low = data.draw(st.booleans())
    values = [low, high] if start_low else [high, low]
    cands = {**cands, target: hovered(cands[target], metric, values[0])}
    roles, _ = settle(cands, current)
    history = {n: [roles[n]] for n in cands}
    for step in range(8):
        cands = {**cands, target: hovered(cands[target], metric, values[(step + 1) % 2])}
        roles = dict(assign_roles(cands, roles, CONFIG).roles)
        for n in cands:
            if roles[n] is not history[n][-1]:
                history[n].append(roles[n])
    for n, seen in history.items():
        flips = [r.value for r in seen]
        assert len(seen) == len(set(seen)), f"{n} flipped back: {flips} ({metric} {low}/{high} on {target})"
