"""Issues 6 and 7 with real daemons: a 4-validator network keeps deciding with one validator
killed, stops (without diverging, and says read-only) with two killed, and catches up when they
return — one identical Primary on every node throughout."""

import json
import signal
from pathlib import Path

import pytest

from tests.integration.daemons import agree_at_common_height, wait_moving, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "static-web.yaml")
FAST = {"MYCELIUM__NODE__HEARTBEAT_S": "1", "MYCELIUM__NODE__DEAD_AFTER_S": "8",
        "MYCELIUM__NODE__READ_ONLY_AFTER_S": "4"}


def _status(d):
    return d.status()


def _network(daemons, n, caps=()):
    nodes = [daemons.new() for _ in range(n)]
    assert nodes[0].up(env=FAST).returncode == 0
    assert nodes[0].cli("network", "create", "quorum").returncode == 0
    wait_until(lambda: nodes[0].status()["epoch"] >= 1, timeout=30, what="first height")
    token = json.loads(nodes[0].cli("invite", "--uses", str(n - 1), "--json").stdout)["token"]
    for i, d in enumerate(nodes[1:], start=1):
        extra = ("--max-role", caps[i]) if i < len(caps) and caps[i] else ()
        res = d.up("--join", token, *extra, env=FAST)
        assert res.returncode == 0, res.stderr
    return nodes


def _agree(nodes):
    return agree_at_common_height(nodes)


def test_four_validators_survive_one_crash_stop_at_two_and_recover(daemons):
    nodes = _network(daemons, 4)
    wait_until(lambda: all(len(n.status()["validators"]) == 4 for n in nodes), timeout=90, interval=0.5,
               what="the validator set to grow to 4 (new members warm up first)")
    victims = nodes[2:]
    survivors = nodes[:2]

    victims[0].kill(signal.SIGKILL)
    h0 = nodes[0].status()["epoch"]
    live = [n for n in nodes if n is not victims[0]]
    try:
        wait_until(lambda: min(n.status()["epoch"] for n in live) >= h0 + 3,
                   timeout=30, what="heights to continue with 3 of 4 validators")
    except AssertionError as exc:  # a liveness failure: say what each survivor's consensus saw
        words = ("stall", "refused", "decided", "round", "behind", "caught up", "error")
        seen = [f"n{nodes.index(n)}: {line[:300]}" for n in live for line in n.log().splitlines()[-400:]
                if any(w in line for w in words)]
        raise AssertionError(f"{exc}; heights {[n.status()['epoch'] for n in live]} from h0={h0}\n"
                             + "\n".join(seen[-60:])) from None

    victims[1].kill(signal.SIGKILL)
    wait_until(lambda: all(n.status()["read_only"] for n in survivors), timeout=30,
               what="the two survivors to report read-only (no quorum)")
    stalled = [n.status() for n in survivors]
    assert "quorum" in stalled[0]["read_only_reason"] or stalled[0]["read_only_reason"]
    h_stall = max(s["epoch"] for s in stalled)
    refused = survivors[0].cli("deploy", EXAMPLE)
    assert refused.returncode == 2 and "read-only" in refused.stderr
    wait_until(lambda: _agree(survivors), timeout=10, what="the survivors to agree while stalled")
    assert max(n.status()["epoch"] for n in survivors) <= h_stall + 1, "no progress without a quorum"

    for v in victims:
        res = v.up(env=FAST)
        assert res.returncode == 0, res.stderr + v.log()
    # a stall of 60 s fails; slow but steady recovery on a loaded machine does not
    wait_moving(lambda: [n.status()["epoch"] for n in nodes], lambda hs: min(hs) >= h_stall + 3, stall_s=60,
                what="progress to resume after the validators return")
    wait_until(lambda: _agree(nodes), timeout=30, interval=0.3, what="one identical Primary on all four")
    wait_until(lambda: not any(n.status()["read_only"] for n in nodes), timeout=30, what="read-only mode to end")


def test_six_nodes_get_their_roles_and_a_dead_sclerotium_is_replaced(daemons):
    nodes = _network(daemons, 6, caps=(None, None, None, None, None, "hypha"))

    def roles():
        st = nodes[0].status()
        spores = json.loads(nodes[0].cli("spores", "primary", "--json").stdout)["primary"]
        return st, {m["node_id"]: m["role"] for m in spores["members"]}

    def settled():
        st, r = roles()
        counts = sorted(r.values())
        return counts == ["hypha", "rhizomorph", "sclerotium", "sclerotium", "sclerotium", "sclerotium"] and (st, r)

    st, r = wait_until(settled, timeout=120, interval=0.5, what="4 sclerotia, 1 rhizomorph, 1 hypha")
    # the capped node's own ledger may still be a height or two behind the founder's (CI saw 'none')
    capped = wait_until(lambda: (c := nodes[5].status())["role"] != "none" and c, timeout=60, interval=0.5,
                        what="the capped node to hold the Primary that admitted it")
    assert capped["role"] == "hypha" and capped["max_role"] == "hypha"
    assert "capped" in capped["role_reason"] or "hypha" in capped["role_reason"]
    rhizomorph = next(n for n, role in r.items() if role == "rhizomorph")

    victim = next(d for d in nodes[1:5] if r[d.status()["node_id"]] == "sclerotium")
    victim_id = victim.status()["node_id"]
    victim.kill(signal.SIGKILL)
    alive = [d for d in nodes if d is not victim]
    h0 = alive[0].status()["epoch"]

    def promoted():
        _, now = roles()
        return now.get(rhizomorph) == "sclerotium" and now.get(victim_id) != "sclerotium" and now
    wait_until(promoted, timeout=60, interval=0.5, what="the rhizomorph to replace the dead sclerotium")
    wait_until(lambda: min(d.status()["epoch"] for d in alive) >= h0 + 3, timeout=30, what="heights to continue")
    wait_until(lambda: _agree(alive), timeout=30, interval=0.3, what="one identical Primary on the five")
