"""Issue 2: a node from nothing to running, inspected and stopped through the CLI, and the bad
inputs a user can throw at it. Real daemons as subprocesses with temp state dirs."""

import json
import os
import signal

import pytest

from tests.integration.daemons import wait_until

pytestmark = pytest.mark.integration


def _epoch_at_least(d, n):
    return lambda: (st := d.status())["epoch"] >= n and st


def test_up_status_down(daemons):
    d = daemons.new()
    res = d.up()
    assert res.returncode == 0, res.stderr + d.log()
    assert "mycelium started" in res.stdout
    st = wait_until(_epoch_at_least(d, 1), timeout=30, what="height 1 (the founder's profile)")
    assert st["role"] == "sclerotium" and st["members"] == 1 and st["admitted"]
    assert st["validators"] == [st["node_id"]]
    assert st["addresses"] and all(a.endswith("/p2p/" + st["node_id"]) for a in st["addresses"])
    assert st["personal_network"] and st["network_name"].startswith("personal-")
    assert len(st["network_id"]) == 64 and len(st["primary_hash"]) == 64
    for field in ("peers", "read_only", "runtime", "services", "uptime_s", "version"):
        assert field in st
    human = d.cli("status")
    assert human.returncode == 0 and "sclerotium" in human.stdout and st["node_id"] in human.stdout
    metrics = d.cli("version", "--json")
    assert json.loads(metrics.stdout)["api_version"] == 1

    down = d.cli("down")
    assert down.returncode == 0, down.stderr
    assert d.pid() is None
    assert not (d.state_dir / "control.sock").exists()
    after = d.cli("status")
    assert after.returncode == 3
    assert "up --detach" in after.stderr
    again = d.cli("down")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_second_daemon_on_one_state_dir_is_refused_naming_the_pid(daemons):
    d = daemons.new()
    assert d.up().returncode == 0
    pid = d.pid()
    second = d.up()
    assert second.returncode == 2
    assert str(pid) in second.stderr
    fg = d.cli("up", "--listen", "/ip4/127.0.0.1/tcp/0", timeout=30)  # foreground too
    assert fg.returncode == 2 and str(pid) in fg.stderr
    assert d.pid() == pid, "the first daemon keeps running"


def test_world_readable_key_is_refused_with_the_fix(daemons):
    d = daemons.new()
    assert d.up().returncode == 0
    assert d.cli("down").returncode == 0
    os.chmod(d.state_dir / "node.key", 0o644)
    res = d.up()
    assert res.returncode == 2
    assert "chmod 600" in res.stderr and "node.key" in res.stderr


def test_corrupted_config_names_the_key_and_file(daemons):
    d = daemons.new()
    d.state_dir.mkdir(parents=True)
    (d.state_dir / "config.toml").write_text("[node]\nmax_roll = 'hypha'\n")
    res = d.up()
    assert res.returncode == 2
    assert "node.max_roll" in res.stderr and "config.toml" in res.stderr
    (d.state_dir / "config.toml").write_text("[node\n")
    res = d.up()
    assert res.returncode == 2 and "not valid TOML" in res.stderr


@pytest.mark.parametrize("token, reason", [("garbage", "not a mycelium join token"),
                                           ("myc1AAAA", "checksum"), ("myc7abc", "version 7")])
def test_malformed_tokens_are_refused_with_a_reason(daemons, token, reason):
    d = daemons.new()
    res = d.up("--join", token)
    assert res.returncode == 2
    assert reason in res.stderr
    assert d.pid() is None


def test_kill_9_then_restart_keeps_identity_and_chain(daemons):
    d = daemons.new()
    assert d.up().returncode == 0
    before = wait_until(_epoch_at_least(d, 1), timeout=30, what="height 1")
    d.kill(signal.SIGKILL)
    assert d.cli("status").returncode == 3  # stale socket: reported as not running
    res = d.up()
    assert res.returncode == 0, res.stderr + d.log()
    after = wait_until(_epoch_at_least(d, before["epoch"]), timeout=30, what="the chain to be back")
    assert (after["node_id"], after["network_id"]) == (before["node_id"], before["network_id"])
    assert after["role"] == "sclerotium" and after["members"] == 1


def test_network_create_invite_and_token_checks(daemons):
    d = daemons.new()
    assert d.up().returncode == 0
    wait_until(_epoch_at_least(d, 1), timeout=30, what="height 1")
    res = d.cli("network", "create", "attic-lab", "--json")
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    st = wait_until(lambda: (s := d.status())["network_name"] == "attic-lab" and s["epoch"] >= 1 and s,
                    timeout=30, what="the new network's first height")
    assert st["network_id"] == created["network_id"] and not st["personal_network"] and st["role"] == "sclerotium"
    bad = d.cli("network", "create", "no spaces allowed")
    assert bad.returncode == 2 and "letters, digits" in bad.stderr

    inv = d.cli("invite", "--ttl", "10m", "--uses", "2", "--json")
    assert inv.returncode == 0, inv.stderr
    token = json.loads(inv.stdout)["token"]
    from mycelium.identity import JoinToken

    decoded = JoinToken.decode(token)
    assert decoded.network_id == st["network_id"] and decoded.invite.uses == 2
    assert decoded.bootstrap and all(a.endswith(st["node_id"]) for a in decoded.bootstrap)
    assert d.cli("invite", "--ttl", "soon").returncode == 2

    # a token for another network is refused by a node that belongs to a named network
    other = daemons.new()
    assert other.up().returncode == 0
    assert other.cli("network", "create", "elsewhere").returncode == 0
    other_token = json.loads(other.cli("invite", "--json").stdout)["token"]
    refused = d.cli("join", other_token)
    assert refused.returncode == 2
    assert "leave" in refused.stderr


def test_tampered_primary_on_disk_is_dropped_with_the_reason_and_redecided_identically(daemons):
    import sqlite3

    d = daemons.new()
    assert d.up().returncode == 0
    before = wait_until(_epoch_at_least(d, 2), timeout=30, what="two heights")
    assert d.cli("down").returncode == 0
    conn = sqlite3.connect(d.state_dir / "state.db")
    height, original, body = conn.execute(
        "SELECT height, hash, body FROM primaries ORDER BY height DESC LIMIT 1").fetchone()
    tampered = bytearray(body)
    at = tampered.find(b"\xa5trust")  # a member's "trust" key (msgpack fixstr 5), not params' "trust_h"
    assert at >= 0, "no member trust value in the stored Primary"
    tampered[at + 7] ^= 0x01  # one bit inside that member's trust value
    conn.execute("UPDATE primaries SET body = ? WHERE height = ?", (bytes(tampered), height))
    conn.commit()
    conn.close()

    assert d.up().returncode == 0, d.log()
    assert "damaged" in d.log() and f'"height": {height}' in d.log() and "trust must be" in d.log()
    st = wait_until(_epoch_at_least(d, height), timeout=30, what="the dropped height to be decided again")
    assert st["node_id"] == before["node_id"]
    # The damaged link was dropped (never trusted) and the height decided again under the
    # consensus lock kept on disk: the very same Primary as before, not a fork.
    conn = sqlite3.connect(d.state_dir / "state.db")
    (again,) = conn.execute("SELECT hash FROM primaries WHERE height = ?", (height,)).fetchone()
    conn.close()
    assert bytes(again) == bytes(original)
