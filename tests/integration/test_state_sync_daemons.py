"""Issue 14 with real daemons: history configured small (`network set history_kept=16`, the smallest
allowed) so pruning happens within the test. A node joins after the links it would have replayed are
gone, and a member offline longer than the history catches up — both by state sync (DESIGN "State
sync"): they start from a recent certified head, not from genesis."""

from __future__ import annotations

import json

import pytest

from tests.integration.daemons import agree_at_common_height, wait_moving, wait_until

pytestmark = pytest.mark.integration
HISTORY = 16  # governance's lower bound for history_kept


@pytest.fixture(autouse=True)
def fast_network(monkeypatch):
    monkeypatch.setenv("MYCELIUM__NODE__HEARTBEAT_S", "1")  # an empty height every second at least


def ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res.stdout


def test_join_after_pruning_and_a_member_back_after_the_history(daemons):
    founder = daemons.new()
    ok(founder.up())
    ok(founder.cli("network", "create", "fungi"))
    wait_until(lambda: founder.status()["epoch"] >= 1, timeout=60, what="the founder's first height")
    ok(founder.cli("network", "set", f"history_kept={HISTORY}"))

    # the genesis link leaves the founder's window: a joiner cannot replay from height 0 any more
    def pruned_past(height):
        return lambda: (s := founder.status())["oldest_height"] > height and s
    wait_moving(lambda: founder.status()["epoch"], lambda _: pruned_past(1)(), stall_s=30,
                what="the founder to prune its first links")

    token = json.loads(ok(founder.cli("invite", "--ttl", "10m", "--json")))["token"]
    joiner = daemons.new()
    ok(joiner.up("--join", token))
    wait_moving(lambda: (joiner.status()["admitted"], joiner.status()["epoch"]), lambda v: v[0], stall_s=60,
                what="the joiner to state-sync and be admitted")
    st = joiner.status()
    assert st["oldest_height"] > 0, f"the joiner replayed from genesis instead of state-syncing: {st}"
    wait_until(lambda: agree_at_common_height([founder, joiner]), timeout=60,
               what="founder and joiner to hold the same Primary at a common height")

    # the member goes away for longer than the founder's history
    left_at = joiner.status()["epoch"]
    ok(joiner.cli("down"))
    wait_moving(lambda: founder.status()["epoch"], lambda _: pruned_past(left_at + 1)(), stall_s=30,
                what="the founder to prune every link the offline member would need")
    ok(joiner.up())
    target = founder.status()["epoch"]
    wait_moving(lambda: joiner.status()["epoch"], lambda h: h >= target, stall_s=60,
                what=f"the returning member to catch up to height {target}")
    assert joiner.status()["oldest_height"] > left_at, "it replayed links instead of state-syncing"
    assert joiner.status()["admitted"]
    wait_until(lambda: agree_at_common_height([founder, joiner]), timeout=60,
               what="both to hold the same Primary at a common height after the return")
