"""Stateful Hypothesis test of the role rule under churn: joins, leaves, crashes, revivals, battery
changes, operator caps and trust moves, with an assignment at every epoch boundary.

Invariants at every epoch: the validator set has a BFT size ≤ the maximum, is empty only when no
member may validate, respects every cap, and — when only liveness changed since the last epoch —
is not smaller than before.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mycelium.roles.assignment import Candidate, Role, RoleConfig, assign_roles, bft_size
from mycelium.roles.fitness import next_battery_epochs
from mycelium.roles.profile import GIB, Reachability
from tests.profiles import make_profile

CONFIG = RoleConfig()
NAMES = [f"n{i:02}" for i in range(12)]


def make_candidate(ram_gib: int, laptop: bool, reach: Reachability, trust: int) -> Candidate:
    profile = make_profile(ram_total_bytes=ram_gib * GIB, ram_available_bytes=ram_gib * GIB // 2,
                           disk_free_bytes=50 * GIB, arch="aarch64", battery_present=laptop, uptime_s=100,
                           load_1m_milli=100, reachability=reach)
    return Candidate(profile, trust=trust, battery_epochs=0)


class RoleChurn(RuleBasedStateMachine):
    @initialize(ram=st.sampled_from([1, 2, 8]), laptop=st.booleans(), cohort=st.integers(0, 7))
    def found(self, ram, laptop, cohort):
        self.members: dict[str, Candidate] = {NAMES[0]: make_candidate(ram, laptop, Reachability.DIRECT, 500)}
        self.roles: dict[str, Role] = {}
        self.only_liveness = False
        self.previous_size = 0
        self.epoch()
        assert self.roles == {NAMES[0]: Role.SCLEROTIUM}  # the founder is the sole sclerotium
        # a cohort of fit nodes joins at once, so that sets of 4 and 7 are reached quickly
        for name in NAMES[1 : cohort + 1]:
            self.members[name] = make_candidate(8, False, Reachability.DIRECT, 600)
        self.only_liveness = False
        self.epoch()

    def member(self, data):
        return data.draw(st.sampled_from(sorted(self.members)))

    def touched(self, liveness_only: bool = False):
        self.only_liveness = self.only_liveness and liveness_only

    @precondition(lambda self: len(self.members) < len(NAMES))
    @rule(
        ram=st.sampled_from([1, 2, 4, 8, 16]),
        laptop=st.booleans(),
        reach=st.sampled_from(list(Reachability)),
        trust=st.sampled_from([100, 300, 500, 900]),
    )
    def join(self, ram, laptop, reach, trust):
        name = next(n for n in NAMES if n not in self.members)
        self.members[name] = make_candidate(ram, laptop, reach, trust)
        self.touched()

    @precondition(lambda self: len(self.members) > 1)
    @rule(data=st.data())
    def leave(self, data):
        del self.members[self.member(data)]
        self.touched()

    @rule(data=st.data())
    def crash_or_revive(self, data):
        name = self.member(data)
        self.members[name] = replace(self.members[name], alive=not self.members[name].alive)
        self.touched(liveness_only=True)

    @precondition(lambda self: any(r is Role.SCLEROTIUM for r in self.roles.values()))
    @rule(data=st.data())
    def crash_a_validator(self, data):
        name = data.draw(st.sampled_from(sorted(n for n, r in self.roles.items() if r is Role.SCLEROTIUM)))
        if name in self.members:
            self.members[name] = replace(self.members[name], alive=False)
            self.touched(liveness_only=True)

    @rule(data=st.data())
    def unplug_or_plug(self, data):
        name = self.member(data)
        c = self.members[name]
        if c.profile.battery_present:
            self.members[name] = replace(c, profile=replace(c.profile, on_battery=not c.profile.on_battery))
            self.touched()

    @rule(data=st.data(), cap=st.sampled_from(list(Role)))
    def operator_caps(self, data, cap):
        name = self.member(data)
        self.members[name] = replace(self.members[name], cap=cap)
        self.touched()

    @rule(data=st.data(), trust=st.sampled_from([0, 200, 300, 600, 1000]))
    def trust_moves(self, data, trust):
        name = self.member(data)
        self.members[name] = replace(self.members[name], trust=trust)
        self.touched()

    @rule()
    def epoch(self):
        # the Primary's battery history advances one epoch, then the rule runs
        self.members = {
            n: replace(c, battery_epochs=next_battery_epochs(c.battery_epochs, c.profile))
            for n, c in self.members.items()
        }
        result = assign_roles(self.members, self.roles, CONFIG)
        size = len(result.validators)
        if self.only_liveness:
            assert size >= self.previous_size, "liveness changes alone shrank the validator set"
        for n, role in result.roles.items():
            assert self.members[n].cap.allows(role)
        self.roles = dict(result.roles)
        self.previous_size = size
        self.only_liveness = True

    @invariant()
    def validator_set_is_well_formed(self):
        validators = [n for n, r in self.roles.items() if r is Role.SCLEROTIUM]
        size = len(validators)
        assert size <= bft_size(CONFIG.max_validators)
        assert size == bft_size(size)
        if self.only_liveness:  # right after an epoch: check emptiness against the same inputs
            capable = any(self.members[n].cap is Role.SCLEROTIUM for n in self.roles)
            assert (size > 0) == capable


RoleChurn.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestRoleChurn = RoleChurn.TestCase
