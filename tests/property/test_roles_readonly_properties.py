"""Hypothesis: QuorumWatch against a reference model over random observation sequences, and
profile wire round trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical, decode
from mycelium.roles.profile import MAX_BYTES, CapabilityProfile, ProfileError, Reachability
from mycelium.roles.readonly import QuorumWatch, ReadOnlyConfig
from mycelium.spores.certificate import quorum_size

VALIDATORS = ["v1", "v2", "v3", "v4", "v5", "v6", "v7"]
THRESHOLD = 10.0

observations = st.lists(
    st.tuples(
        st.floats(0.0, 8.0),  # time step
        st.sets(st.sampled_from(VALIDATORS + ["outsider"])),
        st.booleans(),  # caught up
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7), observations)
def test_read_only_follows_the_reference_model(n, steps):
    vset = VALIDATORS[:n]
    w = QuorumWatch(vset, 0.0, config=ReadOnlyConfig(enter_after_s=THRESHOLD))
    now, last_quorum, read_only = 0.0, 0.0, False
    for dt, reachable, caught_up in steps:
        now += dt
        status = w.observe(now, reachable, caught_up)
        has_quorum = len(reachable & set(vset)) >= quorum_size(n)
        if has_quorum:
            last_quorum = now
            if caught_up:
                read_only = False
        elif now - last_quorum > THRESHOLD:
            read_only = True
        assert status.read_only == read_only == w.read_only
        assert status.reason
        if read_only:
            assert w.deadline() is None
        else:
            assert w.deadline() == last_quorum + THRESHOLD


profiles = st.builds(
    CapabilityProfile,
    cores=st.integers(1, 4096),
    ram_total_bytes=st.integers(0, MAX_BYTES),
    ram_available_bytes=st.integers(0, MAX_BYTES),
    disk_free_bytes=st.integers(0, MAX_BYTES),
    arch=st.from_regex(r"[a-z0-9_.-]{1,32}", fullmatch=True),
    battery_present=st.just(True),
    on_battery=st.booleans(),
    uptime_s=st.integers(0, 1 << 40),
    load_1m_milli=st.integers(0, 10_000_000),
    reachability=st.sampled_from(list(Reachability)),
)


@settings(max_examples=100, deadline=None)
@given(profiles)
def test_profile_wire_round_trip(p):
    assert CapabilityProfile.from_wire(decode(canonical(p.to_wire()))) == p


wire_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=40), st.binary(max_size=8)
)


VALID_WIRE = CapabilityProfile(2, 4, 1, 0, "x86_64", True, False, 0, 0, Reachability.RELAY).to_wire()


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(VALID_WIRE)), wire_values),
    st.sets(st.sampled_from(sorted(VALID_WIRE))),
)
def test_garbage_profiles_are_refused_with_profile_error_only(overrides, dropped):
    wire = {k: v for k, v in (VALID_WIRE | overrides).items() if k not in dropped}
    try:
        p = CapabilityProfile.from_wire(wire)
    except ProfileError:
        return  # refused with the error the caller counts; any other exception fails the test
    assert p.to_wire() == wire  # accepted only if it is exactly a valid profile
