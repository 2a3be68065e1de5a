"""The throttle curves, QEMU's auto-converge rule, and buffer sizes from RTT."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mycelium.ram.buffers import LatencyProfile, MiB, profile_from_manifest
from mycelium.ram.epochs import EpochPart, ReplicationBackup, epoch_digest
from mycelium.ram.throttle import MAX_SLOWDOWN_PCT, AutoConverge, Curve, Throttle, ThrottleError


@pytest.mark.parametrize("curve", [Curve.linear(), Curve.exponential(), Curve.custom([[10, 5], [60, 40], [90, 90]])])
@given(a=st.integers(0, 100), b=st.integers(0, 100))
def test_curves_are_monotone_and_bounded(curve: Curve, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert 0 <= curve.slowdown_pct(lo) <= curve.slowdown_pct(hi) <= MAX_SLOWDOWN_PCT


def test_curve_shapes() -> None:
    lin, exp = Curve.linear(), Curve.exponential()
    assert lin.slowdown_pct(50) == 0 and lin.slowdown_pct(75) == 49 and lin.slowdown_pct(100) == MAX_SLOWDOWN_PCT
    assert exp.slowdown_pct(25) == 0 and exp.slowdown_pct(50) < lin.slowdown_pct(90) and exp.slowdown_pct(100) == 99
    assert Curve.custom([[20, 10], [80, 60]]).slowdown_pct(50) == 35


@pytest.mark.parametrize("points, message", [([], "at least one"), ([[10, 50], [20, 40]], "must not fall"),
                                             ([[10, 5], [10, 6]], "once"), ([[120, 5]], "outside")])
def test_bad_custom_points_name_the_problem(points, message) -> None:
    with pytest.raises(ThrottleError, match=message):
        Curve.custom(points)


def test_auto_converge_follows_qemu_rule_and_eases_off() -> None:
    rule = AutoConverge()
    assert rule.on_period(60, 100) == 0          # one high period is not enough
    assert rule.on_period(60, 100) == 20         # two: cpu-throttle-initial
    assert [rule.on_period(60, 100) for _ in range(4)] == [20, 30, 30, 40]  # +increment every 2 periods
    assert rule.on_period(40, 100) == 40 and rule.on_period(40, 100) == 30  # ours: eases off when calm
    for _ in range(40):
        rule.on_period(100, 1)
    assert rule.level_pct == MAX_SLOWDOWN_PCT


def test_throttle_from_manifest_and_full_backlog_forces_the_maximum() -> None:
    assert Throttle.from_manifest(None).kind == "auto-converge"
    t = Throttle.from_manifest({"curve": "custom", "points": [[0, 0], [100, 50]]})
    assert t.on_period(50, 0, 1) == 25
    assert Throttle.from_manifest({}).on_period(100, 0, 100) == MAX_SLOWDOWN_PCT
    with pytest.raises(ThrottleError):
        Throttle.from_manifest({"curve": "wobbly"})


def test_buffers_from_rtt() -> None:
    lan = LatencyProfile.lan().sizes()
    assert lan.window_bytes == 1 * MiB and lan.backlog_limit_bytes == 200 * MiB
    wan = LatencyProfile.wan().sizes()
    assert wan.window_bytes == int(2 * 10 * MiB * 0.06) and wan.backlog_limit_bytes == 50 * MiB
    auto = profile_from_manifest("auto", measured_rtt_s=0.2, measured_Bps=100 * MiB).sizes()
    assert auto.window_bytes == 40 * MiB and auto.backlog_limit_bytes == 200 * MiB
    huge = LatencyProfile.auto(1.0, 10_000 * MiB).sizes()
    assert huge.backlog_limit_bytes == 512 * MiB and huge.window_bytes <= huge.backlog_limit_bytes
    with pytest.raises(ValueError):
        profile_from_manifest("moon")


def test_a_corrupt_epoch_is_refused_whole() -> None:
    b = ReplicationBackup(1)
    digest = epoch_digest(0, -1, {0: b"good"})
    assert b.on_part(EpochPart(1, 0, -1, 0, 1, digest, ((0, b"evil"),))) == []
    assert b.committed_epoch == -1 and b.image == {} and b.counters["digest_mismatch"] == 1


def test_auto_converge_does_not_ramp_while_backups_keep_up():
    # replication carries what was dirtied: dirty ≈ carried every period, which QEMU's rule (made for a
    # migration saturating its link) reads as "too fast" forever; in sync means the channel kept up
    t = Throttle.from_manifest(None)
    assert [t.on_period(5, 1000, 1000, in_sync=True) for _ in range(6)] == [0] * 6
    assert [t.on_period(5, 1000, 1000) for _ in range(2)] == [0, 20]  # behind: the rule acts
    assert [t.on_period(0, 1000, 1000, in_sync=True) for _ in range(2)] == [20, 0]  # caught up: it eases off


def test_the_manifests_latency_profile_sizes_the_buffers_auto_from_the_slowest_backups_rtt() -> None:
    from mycelium.ram.buffers import sizes_for_backups

    assert sizes_for_backups(None, [None]) == (LatencyProfile.lan().sizes(), "lan")
    assert sizes_for_backups("wan", [0.4]) == (LatencyProfile.wan().sizes(), "wan")
    sizes, how = sizes_for_backups("auto", [20.0, None, 80.0])  # ms; the slowest backup counts
    assert sizes == LatencyProfile.auto(0.080, LatencyProfile.lan().bandwidth_Bps).sizes() and how == "auto (rtt 80.0 ms)"
    assert sizes.window_bytes == int(2 * 100 * MiB * 0.080) > LatencyProfile.lan().sizes().window_bytes
    assert sizes_for_backups("auto", [None, None]) == (LatencyProfile.lan().sizes(), "auto (no rtt measured yet: lan)")


def test_a_manifest_names_its_latency_profile_and_a_wrong_one_is_refused() -> None:
    from mycelium.runtime.manifest import ManifestError, parse_manifest

    doc = "apiVersion: mycelium/v1\nkind: Endophyte\nname: c\nspec:\n  process: {command: [python3, x.py]}\n  backups: 1\n"
    assert parse_manifest(doc + "  latency: auto\n").spec["latency"] == "auto"
    with pytest.raises(ManifestError) as err:
        parse_manifest(doc + "  latency: moon\n")
    assert "latency" in str(err.value)
