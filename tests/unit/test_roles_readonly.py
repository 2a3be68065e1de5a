"""QuorumWatch: entering and leaving read-only mode in a partition (pure, `now` passed in)."""

from __future__ import annotations

import pytest

from mycelium.roles.readonly import QuorumWatch, ReadOnlyConfig, ReadOnlyMode

V4 = ["v1", "v2", "v3", "v4"]  # quorum of 4 is 3


def watch(validators=V4, now=0.0, **kw) -> QuorumWatch:
    return QuorumWatch(validators, now, config=ReadOnlyConfig(enter_after_s=30.0), **kw)


def test_minority_enters_read_only_after_the_threshold_and_not_before():
    w = watch()
    assert w.observe(0.0, V4, caught_up=True).read_only is False
    for t in (1.0, 10.0, 30.0):  # "longer than" the threshold: 30 s after the last quorum is still fine
        status = w.observe(t, ["v1", "v2"], caught_up=True)
        assert not status.read_only
    assert "read-only in 0 s unless it returns" in status.reason
    status = w.observe(30.5, ["v1", "v2"], caught_up=True)
    assert status.read_only and status.since == 30.5
    assert status.reason == "no quorum for 30 s (2 of 4 validators reachable, quorum needs 3)"
    assert (status.reachable, status.needed, status.validators) == (2, 3, 4)


def test_quorum_returning_in_time_resets_the_clock():
    w = watch()
    w.observe(20.0, ["v1"], caught_up=True)
    w.observe(25.0, ["v1", "v2", "v3"], caught_up=False)  # quorum seen again (caught_up irrelevant here)
    assert not w.observe(50.0, ["v1"], caught_up=True).read_only
    assert w.deadline() == 55.0
    assert w.observe(55.1, ["v1"], caught_up=True).read_only


def test_leaves_only_with_quorum_and_after_catching_up():
    w = watch()
    w.observe(31.0, [], caught_up=True)
    assert w.read_only
    assert w.observe(40.0, ["v1", "v2"], caught_up=True).read_only  # still no quorum
    status = w.observe(41.0, ["v1", "v2", "v3"], caught_up=False)
    assert status.read_only and "catching up with the Primary chain" in status.reason
    status = w.observe(42.0, ["v1", "v2", "v3"], caught_up=True)
    assert not status.read_only and status.since is None
    assert status.reason == "quorum reachable (3 of 4 validators reachable, quorum needs 3)"


def test_a_validator_counts_itself():
    w = watch(self_id="v1")
    assert not w.observe(100.0, ["v2", "v3"], caught_up=True).read_only  # v1 + v2 + v3 = quorum
    assert w.observe(131.0, ["v2"], caught_up=True).read_only
    lone = QuorumWatch(["me"], 0.0, self_id="me")
    assert not lone.observe(1e6, [], caught_up=True).read_only  # the sole sclerotium is its own quorum


def test_non_validators_in_the_reachable_set_do_not_count():
    w = watch()
    status = w.observe(31.0, ["v1", "x", "y", "z"], caught_up=True)
    assert status.read_only and status.reachable == 1


def test_new_validator_set_keeps_the_clock_running():
    w = watch()
    w.observe(20.0, ["v1"], caught_up=True)
    w.set_validators(["w1", "w2", "w3", "w4", "w5", "w6", "w7"])
    status = w.observe(31.0, ["w1", "w2", "w3", "w4"], caught_up=True)  # quorum of 7 is 5
    assert status.read_only and status.needed == 5
    assert not w.observe(32.0, ["w1", "w2", "w3", "w4", "w5"], caught_up=True).read_only


def test_no_validator_set_known():
    w = watch(validators=[])
    status = w.observe(31.0, ["v1"], caught_up=True)
    assert status.read_only and status.reason == "no validator set known yet" and status.needed == 0


def test_clock_going_backwards_does_not_crash_or_leave():
    w = watch()
    w.observe(40.0, [], caught_up=True)
    assert w.read_only
    assert w.observe(5.0, [], caught_up=True).read_only


def test_writes_are_refused_with_a_clear_message_while_read_only():
    w = watch()
    w.check_writable("deploy web")  # writable: no error
    w.observe(31.0, ["v1"], caught_up=True)
    with pytest.raises(ReadOnlyMode, match=r"cannot deploy web: this node is in read-only mode \(no quorum"):
        w.check_writable("deploy web")
    assert w.deadline() is None


def test_config_is_validated():
    with pytest.raises(ValueError, match="enter_after_s"):
        ReadOnlyConfig(enter_after_s=-1)
    with pytest.raises(ValueError, match="enter_after_s"):
        ReadOnlyConfig(enter_after_s=float("nan"))
