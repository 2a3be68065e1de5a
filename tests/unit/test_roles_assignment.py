"""Unit tests of the role rule: the issue's 6-node scenario, growth, failover, caps, battery, trust."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mycelium.roles.assignment import Assignment, Candidate, Role, RoleConfig, RoleError, assign_roles, bft_size
from mycelium.roles.fitness import score
from mycelium.roles.profile import GIB, MIB, CapabilityProfile, Reachability
from tests.profiles import make_profile

S, R, H = Role.SCLEROTIUM, Role.RHIZOMORPH, Role.HYPHA


def profile(ram_gib: int = 8, **kw) -> CapabilityProfile:
    return make_profile(**{"ram_total_bytes": ram_gib * GIB, "ram_available_bytes": ram_gib * GIB // 2, **kw})


def node(ram_gib: int = 8, *, trust: int = 500, **kw) -> Candidate:
    cand_fields = {k: kw.pop(k) for k in ("cap", "alive", "uptime_permille", "battery_epochs") if k in kw}
    return Candidate(profile(ram_gib, **kw), trust=trust, **cand_fields)


def laptop(on_battery: bool, battery_epochs: int | None = None) -> Candidate:
    return node(16, battery_present=True, on_battery=on_battery, battery_epochs=battery_epochs)


def run(cands: dict[str, Candidate], current: dict | None = None, config: RoleConfig = RoleConfig()) -> Assignment:
    return assign_roles(cands, current or {}, config)


def settle(cands: dict[str, Candidate], current: dict | None = None, config: RoleConfig = RoleConfig()) -> dict:
    roles = dict(current or {})
    for _ in range(config.max_validators + 3):
        nxt = run(cands, roles, config).roles
        if nxt == roles:
            return roles
        roles = dict(nxt)
    raise AssertionError("roles did not settle")


def count(roles: dict[str, Role], role: Role) -> int:
    return sum(1 for r in roles.values() if r is role)


# --------------------------------------------------------------------------- the scenario


def test_six_nodes_one_capped_then_a_sclerotium_dies_and_the_rhizomorph_is_promoted():
    cands = {f"n{i}": node(4 + i) for i in range(6)}
    cands["n5"] = replace(cands["n5"], cap=H)
    first = run(cands)
    assert (count(first.roles, S), count(first.roles, R), count(first.roles, H)) == (4, 1, 1)
    assert first.roles["n5"] is H and "capped at hypha by operator" in first.reasons["n5"]
    assert first.validators == ("n1", "n2", "n3", "n4")  # the four best (most RAM)
    rhizomorph = next(n for n, r in first.roles.items() if r is R)

    victim = "n3"
    cands[victim] = replace(cands[victim], alive=False)
    second = run(cands, first.roles)
    assert second.roles[rhizomorph] is S
    assert second.roles[victim] is not S
    assert len(second.validators) == 4
    assert f"replaces dead validator {victim}" in second.reasons[rhizomorph]
    assert f"replaced by {rhizomorph} while dead" in second.reasons[victim]
    assert second.changes(first.roles) == {rhizomorph: (R, S), victim: (S, R)}

    # and it stays that way: the dead node no longer holds a seat, the set keeps its size
    assert run(cands, second.roles).roles == second.roles
    # when the dead node comes back it does not push anyone out (same class of hardware: no margin)
    cands[victim] = replace(cands[victim], alive=True)
    assert run(cands, second.roles).roles == second.roles


def test_six_nodes_grown_one_join_at_a_time_end_the_same_way():
    order = [f"n{i}" for i in range(6)]
    pool = {f"n{i}": node(4 + i) for i in range(6)}
    pool["n5"] = replace(pool["n5"], cap=H)
    roles: dict[str, Role] = {}
    sizes = []
    for joined in range(1, 7):
        cands = {n: pool[n] for n in order[:joined]}
        roles = dict(run(cands, roles).roles)
        sizes.append(count(roles, S))
    assert sizes == [1, 1, 1, 4, 4, 4]
    assert roles["n0"] is S  # the founder keeps its seat: nobody beats it by the swap margin
    assert (count(roles, S), count(roles, R), count(roles, H)) == (4, 1, 1)


def test_first_node_is_the_sole_sclerotium_even_when_weak():
    weak = node(1, disk_free_bytes=100 * MIB, battery_present=True, on_battery=True, uptime_permille=0, trust=0)
    result = run({"founder": weak})
    assert result.roles == {"founder": S}
    assert "first node of the network" in result.reasons["founder"]


def test_validator_set_grows_in_bft_sizes_up_to_the_maximum():
    for n in range(1, 12):
        cands = {f"n{i:02}": node() for i in range(n)}
        result = run(cands)
        assert len(result.validators) == bft_size(min(n, 7))
    assert len(run({f"n{i:02}": node() for i in range(11)}, config=RoleConfig(max_validators=10)).validators) == 10
    assert len(run({f"n{i:02}": node() for i in range(11)}, config=RoleConfig(max_validators=6)).validators) == 4


def test_bft_size():
    assert [bft_size(x) for x in range(0, 9)] == [0, 1, 1, 1, 4, 4, 4, 7, 7]


# --------------------------------------------------------------------------- failures do not shrink the set


def test_dead_validator_without_replacement_keeps_its_seat():
    cands = {f"n{i}": node() for i in range(4)}
    roles = settle(cands)
    cands["n2"] = replace(cands["n2"], alive=False)
    cands["n3"] = replace(cands["n3"], alive=False)
    result = run(cands, roles)
    assert len(result.validators) == 4
    assert "kept as validator (dead): no replacement" in result.reasons["n2"]


def test_dead_node_that_is_not_a_validator_does_not_count_toward_growth():
    cands = {"a": node(), "b": node(), "c": node(), "d": node(alive=False)}
    assert run(cands, {"a": S}).validators == ("a",)


def test_capped_validator_leaves_at_once_even_if_the_set_shrinks():
    cands = {f"n{i}": node() for i in range(4)}
    roles = settle(cands)
    cands["n1"] = replace(cands["n1"], cap=R)
    result = run(cands, roles)
    assert result.roles["n1"] is R
    assert "capped at rhizomorph by operator" in result.reasons["n1"]
    assert len(result.validators) == 1  # 3 remaining seat-holders: the largest BFT size is 1


# --------------------------------------------------------------------------- battery, trust, swaps


def test_battery_incumbent_is_replaced_only_after_the_grace_period():
    cands = {f"n{i}": node() for i in range(3)} | {"lap": laptop(False)}
    roles = settle(cands)
    assert roles["lap"] is S
    cands["spare"] = node(2)  # weaker than the laptop, but plugged in
    roles = settle(cands, roles)
    assert roles["lap"] is S and roles["spare"] is R
    for epochs in (1, 2):
        cands["lap"] = laptop(True, battery_epochs=epochs)
        assert run(cands, roles).roles == roles
    cands["lap"] = laptop(True, battery_epochs=3)
    result = run(cands, roles)
    assert result.roles["lap"] is H and result.roles["spare"] is S
    assert "replaces validator lap (on battery)" in result.reasons["spare"]
    assert "on battery" in result.reasons["lap"]
    # plugged in again: it does not take its seat back from the spare, it is a rhizomorph
    cands["lap"] = laptop(False)
    again = run(cands, result.roles)
    assert again.roles["lap"] is R and again.roles["spare"] is S


def test_battery_incumbent_without_replacement_keeps_its_seat():
    cands = {f"n{i}": node() for i in range(3)} | {"lap": laptop(False)}
    roles = settle(cands)
    cands["lap"] = laptop(True)  # untracked battery epochs: past the grace period at once
    result = run(cands, roles)
    assert result.roles["lap"] is S and len(result.validators) == 4
    assert "kept as validator (on battery): no replacement" in result.reasons["lap"]


def test_node_on_battery_is_never_promoted():
    cands = {"a": node(), "b": node(), "c": node(), "lap": laptop(True, battery_epochs=1)}
    result = run(cands, {"a": S})
    assert result.roles["lap"] is H and result.validators == ("a",)
    assert "on battery" in result.reasons["lap"]


def test_low_trust_validator_is_replaced():
    cands = {f"n{i}": node() for i in range(5)}
    roles = settle(cands)
    (spare,) = [n for n, r in roles.items() if r is R]
    victim = sorted(n for n, r in roles.items() if r is S)[0]
    cands[victim] = replace(cands[victim], trust=200)  # under trust_keep_sclerotium = 250
    result = run(cands, roles)
    assert result.roles[spare] is S and result.roles[victim] is R
    assert any("trust 200 under 250" in r for r in result.reasons[spare])


def test_trust_between_the_bars_keeps_but_does_not_promote():
    cands = {f"n{i}": node() for i in range(4)} | {"x": node(trust=300)}
    roles = settle(cands)
    assert roles["x"] is R  # 300 < promote bar 400
    victim = "n0"
    roles = settle(cands | {"x": node(trust=500)}, roles)  # x would qualify now …
    assert roles["x"] is R  # … but nobody is failing and it does not beat anyone by the margin
    cands[victim] = replace(cands[victim], trust=300)  # 300 ≥ keep bar 250: stays
    assert run(cands, roles).roles[victim] is S


def test_clearly_better_challenger_displaces_one_validator_per_assignment():
    weak = dict(ram_gib=2, cores=1, reachability=Reachability.RELAY)
    cands = {f"w{i}": node(**weak) for i in range(4)}
    roles = settle(cands)
    cands |= {"big1": node(32, cores=16), "big2": node(32, cores=16)}
    assert score(cands["big1"]) > score(cands["w0"]) + RoleConfig().swap_margin
    first = run(cands, roles)
    assert count(first.roles, S) == 4
    assert len(set(first.validators) & {"big1", "big2"}) == 1
    second = run(cands, first.roles)
    assert {"big1", "big2"} <= set(second.validators)


def test_rhizomorph_cap_is_reported():
    cands = {"a": node(), "b": node(cap=R)}
    result = run(cands)
    assert result.roles == {"a": S, "b": R}
    assert result.reasons["b"] == ("8 GiB RAM, direct address, 100% uptime", "capped at rhizomorph by operator")


def test_small_node_is_a_hypha_with_the_reason():
    cands = {"a": node(), "pi": node(ram_gib=0, ram_total_bytes=512 * MIB, ram_available_bytes=100 * MIB)}
    result = run(cands)
    assert result.roles["pi"] is H
    assert result.reasons["pi"] == ("512 MiB RAM, workloads need 768 MiB",)


def test_facts_line_for_a_validator():
    result = run({"a": node(8, uptime_permille=995)})
    assert result.reasons["a"][0] == "8 GiB RAM, direct address, 99% uptime"


def test_every_operator_capped_means_no_validator():
    result = run({"a": node(cap=R), "b": node(cap=H)})
    assert result.validators == () and result.roles == {"a": R, "b": H}


# --------------------------------------------------------------------------- inputs


def test_roles_of_non_members_are_ignored():
    result = run({"a": node()}, {"gone": S, "a": R})
    assert result.roles == {"a": S}


def test_bad_inputs_are_refused_with_a_clear_error():
    with pytest.raises(RoleError, match="current role must be a Role"):
        assign_roles({"a": node()}, {"a": "sclerotium"})  # type: ignore[dict-item]
    with pytest.raises(RoleError, match="must be a Candidate"):
        assign_roles({"a": profile()}, {})  # type: ignore[dict-item]
    with pytest.raises(RoleError, match="uptime_permille"):
        node(uptime_permille=1001)
    with pytest.raises(RoleError, match="trust"):
        node(trust=-1)
    with pytest.raises(RoleError, match="lower hysteresis bar"):
        RoleConfig(trust_keep_sclerotium=500, trust_promote_sclerotium=400)
    with pytest.raises(RoleError, match="max_validators"):
        RoleConfig(max_validators=0)


def test_role_helpers_and_wire_form():
    assert H.rank < R.rank < S.rank
    assert not H.holds_workloads and R.holds_workloads and S.holds_workloads
    assert R.allows(H) and R.allows(R) and not R.allows(S)
    wire = run({"a": node(), "b": node(cap=H)}).to_wire()
    assert wire["roles"] == {"a": "sclerotium", "b": "hypha"}
    assert wire["why"]["b"] == ["capped at hypha by operator"]


def test_rhizomorph_unplugged_for_short_spells_stays_a_rhizomorph():
    cands = {"a": node(), "lap": laptop(False)}
    roles = settle(cands)
    assert roles["lap"] is R
    for on, epochs in [(True, 1), (False, 0), (True, 1), (True, 2), (False, 0)]:
        cands["lap"] = laptop(on, battery_epochs=epochs)
        roles = dict(run(cands, roles).roles)
        assert roles["lap"] is R
    cands["lap"] = laptop(True, battery_epochs=3)
    assert run(cands, roles).roles["lap"] is H


def test_rhizomorph_trust_hovering_at_the_promotion_bar_does_not_flap():
    cands = {"a": node(), "x": node(trust=210)}
    roles = settle(cands)
    assert roles["x"] is R
    for trust in (190, 210, 190, 210):
        cands["x"] = node(trust=trust)
        roles = dict(run(cands, roles).roles)
        assert roles["x"] is R
    cands["x"] = node(trust=90)  # under the keep bar
    assert run(cands, roles).roles["x"] is H


def test_next_battery_epochs_counts_consecutive_epochs_on_battery():
    from mycelium.roles.fitness import next_battery_epochs

    on, off = profile(battery_present=True, on_battery=True), profile(battery_present=True)
    assert next_battery_epochs(None, on) == 1
    assert next_battery_epochs(2, on) == 3
    assert next_battery_epochs(5, off) == 0
    assert next_battery_epochs(10, on, limit=10) == 10
