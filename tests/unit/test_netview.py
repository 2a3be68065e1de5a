"""The network picture (mycelium.netview): assemble() states, links and bounds; the gauges carried
in the Latent spore and exported to /metrics; the page's server guarding its data with the token."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical
from mycelium.identity import NodeKey
from mycelium.netview import gauges, snapshot, web
from mycelium.netview.snapshot import Round, assemble
from mycelium.spores.entry import MAX_BODY_BYTES, EntryType, make_entry

STATUS = {"node_id": "", "network_name": "fungi", "network_id": "ab" * 16, "role": "sclerotium", "read_only": False,
          "read_only_reason": "", "personal_network": False, "version": "0", "uptime_s": 5, "epoch": 7,
          "primary_hash": "cd" * 16, "consensus": "voting"}


def ids(n: int) -> list[str]:
    return [f"12D3KooW{i:044d}" for i in range(n)]


def member(role: str) -> dict:
    return {"role": role, "trust_ppm": 1_000_000, "joined": 0, "max_role": None}


def pic(me: str, members: dict, *, alive=None, peers=(), reports=None, rounds=()):
    return assemble(me=me, status={**STATUS, "node_id": me}, members=members, alive=alive or {}, peers=list(peers),
                    reports=reports or {}, rounds=list(rounds), services=[], endophytes=[], storage=None,
                    storage_reason="off", now_s=1000.0)


def test_states_roles_validators_and_links():
    a, b, c, d = ids(4)
    members = {a: member("sclerotium"), b: member("rhizomorph"), c: member("rhizomorph"), d: member("hypha")}
    peers = [{"node_id": b, "connected": True, "admitted": True, "latency_ms": 1.5},
             {"node_id": c, "connected": False, "admitted": False, "latency_ms": None}]
    reports = {b: {"epoch": 7, "members": 4, "peers": 2, "read_only": 0, "rss_bytes": 1, "uptime_s": 60, "sw": "0",
                   "links": {a: 2000, c: 3000, d: -1}, "age_s": 3.0}}
    mine = {**reports[b], "epoch": 2, "age_s": 200.0}  # our own last report: older than what we know
    p = pic(a, members, alive={d: False}, peers=peers, reports={**reports, a: mine})
    me_row = next(m for m in p["members"] if m["node_id"] == a)
    assert me_row["epoch"] == STATUS["epoch"] and me_row["report_age_s"] is None
    states = {m["node_id"]: m["state"] for m in p["members"]}
    assert states == {a: "self", b: "up", c: "unreachable", d: "dead"}
    assert [v["node_id"] for v in p["consensus"]["validators"]] == [a]
    assert {m["node_id"]: m["role"] for m in p["members"]} == {n: members[n]["role"] for n in members}
    # only links among nodes we see up; our own measurement wins over the peer's report
    assert p["links"] == [{"a": min(a, b), "b": max(a, b), "latency_ms": 1.5, "seen_by": a}]
    by_b = next(m for m in p["members"] if m["node_id"] == b)
    assert by_b["epoch"] == 7 and by_b["read_only"] is False and by_b["latency_ms"] == 1.5
    assert p["storage"] == {"unavailable": "off"}
    assert p["node"]["unusable"] is None and p["node"]["subsystems"] == {}
    json.dumps(p)  # JSON-able as it is
    from mycelium.cli.top import render
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render({**p, "node": {**p["node"], "unusable": {"reason": "disk full", "fix": "free space"}}}, refresh=3))
    text = console.export_text()
    assert "refresh 3" in text and "CANNOT RUN: disk full" in text and b[-8:] in text and "unreachable" in text


def test_links_between_others_come_from_their_reports():
    a, b, c = ids(3)
    members = {n: member("rhizomorph") for n in (a, b, c)}
    peers = [{"node_id": n, "connected": True, "admitted": True, "latency_ms": None} for n in (b, c)]
    base = {"epoch": 1, "members": 3, "peers": 2, "read_only": 0, "rss_bytes": 1, "uptime_s": 0, "sw": "0", "age_s": 1.0}
    p = pic(a, members, peers=peers, reports={b: {**base, "links": {c: 4000}}})
    link = next(l for l in p["links"] if {l["a"], l["b"]} == {b, c})
    assert link["latency_ms"] == 4.0 and link["seen_by"] == b
    assert len(p["links"]) == 3


def test_rate_and_rounds():
    a = ids(1)[0]
    rounds = [Round(0, 0, 0, (a,), 1)] + [Round(h, 100 + 2 * h, 0, (a,), 1) for h in range(1, 31)]
    c = pic(a, {a: member("sclerotium")}, rounds=rounds)["consensus"]
    assert c["heights_per_min"] == 30.0  # one height every 2 s
    assert [r["height"] for r in c["rounds"]] == list(range(30, 30 - snapshot.ROUNDS_SHOWN, -1))


def test_links_bounded(monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_LINKS", 5)
    nodes = ids(8)
    members = {n: member("rhizomorph") for n in nodes}
    peers = [{"node_id": n, "connected": True, "admitted": True, "latency_ms": 1.0} for n in nodes[1:]]
    base = {"epoch": 1, "members": 8, "peers": 7, "read_only": 0, "rss_bytes": 1, "uptime_s": 0, "sw": "0", "age_s": 1.0}
    reports = {n: {**base, "links": {m: 1000 for m in nodes if m != n}} for n in nodes[1:]}
    assert len(pic(nodes[0], members, peers=peers, reports=reports)["links"]) == 5


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_member_once_and_links_only_among_reachable(data):
    nodes = ids(data.draw(st.integers(1, 9)))
    roles = st.sampled_from(["sclerotium", "rhizomorph", "hypha"])
    members = {n: member(data.draw(roles)) for n in nodes}
    me = nodes[0]
    peers = [{"node_id": n, "connected": data.draw(st.booleans()), "admitted": True, "latency_ms": None}
             for n in nodes[1:] if data.draw(st.booleans())]
    alive = {n: data.draw(st.booleans()) for n in nodes}
    base = {"epoch": 1, "members": 1, "peers": 0, "read_only": 0, "rss_bytes": 1, "uptime_s": 0, "sw": "0", "age_s": 1.0}
    reports = {n: {**base, "links": {m: data.draw(st.integers(-1, 10**6)) for m in nodes if data.draw(st.booleans())}}
               for n in nodes if data.draw(st.booleans())}
    p = pic(me, members, alive=alive, peers=peers, reports=reports)
    assert sorted(m["node_id"] for m in p["members"]) == sorted(nodes)
    state = {m["node_id"]: m["state"] for m in p["members"]}
    assert set(state.values()) <= {"self", "up", "unreachable", "dead"}
    pairs = [(l["a"], l["b"]) for l in p["links"]]
    assert len(pairs) == len(set(pairs)) and all(a < b for a, b in pairs)
    assert all(state[a] in ("self", "up") and state[b] in ("self", "up") for a, b in pairs)


# ------------------------------------------------------------------------------ gauges
def fake_session(n_peers: int):
    peers = [SimpleNamespace(node_id=f"12D3KooW{i:044d}", connected=True, admitted=True, latency_ms=0.4 + i)
             for i in range(n_peers)]
    mesh = SimpleNamespace(peers=lambda: peers)
    ledger = SimpleNamespace(height=12, member_count=lambda: n_peers + 1, head=None)
    node = SimpleNamespace(read_only=lambda: False, uptime_s=125)
    return SimpleNamespace(node=node, ledger=ledger, mesh=mesh)


def test_own_gauges_bounded_and_fit_an_entry():
    body = gauges.own_gauges(fake_session(100))
    assert len(body["links"]) == gauges.MAX_LINKS
    assert body["links"]["12D3KooW" + "0" * 44] == 1000  # rounded to whole ms, at least 1 ms
    assert body["uptime_s"] == 120 and body["peers"] == 100 and gauges.valid_body(body)
    assert len(canonical(body)) <= MAX_BODY_BYTES


def test_reports_newest_per_author_and_malformed_ignored():
    k1, k2 = NodeKey.generate(), NodeKey.generate()
    good = gauges.own_gauges(fake_session(2))
    e_old = make_entry(k1, "net", EntryType.USAGE, {**good, "epoch": 1}, version=1000, timestamp_ms=1000, name="gauges")
    e_new = make_entry(k1, "net", EntryType.USAGE, {**good, "epoch": 2}, version=2000, timestamp_ms=2000, name="gauges")
    bad = make_entry(k2, "net", EntryType.USAGE, {**good, "epoch": "x"}, version=1000, timestamp_ms=1000, name="gauges")
    other = make_entry(k2, "net", EntryType.USAGE, good, version=1000, timestamp_ms=1000, name="cpu")
    reps = gauges.reports_from([e_new, e_old, bad, other], now_s=5.0)
    assert list(reps) == [k1.node_id] and reps[k1.node_id]["epoch"] == 2 and reps[k1.node_id]["age_s"] == 3.0


def test_collector_exports_members_only_labelled_by_node():
    k1, k2 = NodeKey.generate(), NodeKey.generate()
    body = gauges.own_gauges(fake_session(1))
    entries = [make_entry(k, "net", EntryType.USAGE, body, version=1, timestamp_ms=1, name="gauges") for k in (k1, k2)]
    session = SimpleNamespace(latent=SimpleNamespace(store=SimpleNamespace(entries=lambda: entries)),
                              ledger=SimpleNamespace(head=SimpleNamespace(members={k1.node_id: None})))
    fams = {f.name: f for f in gauges.NetworkCollector(lambda: session).collect()}
    assert set(fams) == {n.removesuffix("_total") for n in gauges.NETWORK_METRICS}
    epoch = fams["mycelium_network_epoch"].samples
    assert [(s.labels, s.value) for s in epoch] == [({"node": k1.node_id}, 12)]
    assert fams["mycelium_network_link_latency_seconds"].samples[0].labels["node"] == k1.node_id


def test_dashboard_names_only_metrics_the_code_exports():
    import re
    from pathlib import Path

    from mycelium.observability.metrics import NodeMetrics

    dash = json.loads((Path(__file__).parents[2] / "examples/monitoring/grafana-dashboard.json").read_text())
    named = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"\bmycelium_[a-z_]+", t["expr"])}
    text = NodeMetrics().exposition().decode()
    known = set(gauges.NETWORK_METRICS) | set(re.findall(r"^# TYPE (\S+)", text, re.M)) | {
        "mycelium_mesh_events_total", "mycelium_consensus_rejected_total"}  # session counters (no session here)
    assert named and named <= known, named - known


# ------------------------------------------------------------------------------ the page's server
SECRET_MARK = "12D3KooWsecretnodeid"


async def http(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    hdrs = {"host": f"127.0.0.1:{port}", **(headers or {})}
    req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    await stream.send_all(req.encode())
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v for k, v in (l.split(": ", 1) for l in lines[1:])}, body


async def test_server_needs_the_token_for_data_and_leaks_nothing():
    server = web.WebServer("tok-123", lambda: {"members": [SECRET_MARK]}, lambda: ("text/plain", SECRET_MARK.encode()))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        for path, hdrs in [("/api/snapshot", {}), ("/api/snapshot?token=nope", {}), ("/metrics", {}),
                           ("/api/snapshot", {"authorization": "Bearer tok-12"}), ("/metrics", {"authorization": "Basic tok-123"})]:
            status, headers, body = await http(port, path, hdrs)
            assert status == 401, (path, hdrs)
            assert SECRET_MARK.encode() not in body and headers["www-authenticate"].startswith("Bearer")
        status, headers, body = await http(port, "/api/snapshot", {"authorization": "Bearer tok-123"})
        assert status == 200 and json.loads(body) == {"members": [SECRET_MARK]} and headers["cache-control"] == "no-store"
        assert (await http(port, "/metrics?token=tok-123"))[0] == 200
        status, headers, body = await http(port, "/")
        assert status == 200 and b"/static/app.js" in body and "script-src" not in headers["content-security-policy"]
        assert (await http(port, "/static/app.js"))[1]["content-type"].startswith("text/javascript")
        assert (await http(port, "/static/../web.py"))[0] == 404
        assert (await http(port, "/static/nope.js"))[0] == 404
        # a page elsewhere reaching us through a rebound DNS name: refused before any data
        status, _, body = await http(port, "/api/snapshot?token=tok-123", {"host": f"evil.example:{port}"})
        assert status == 421 and SECRET_MARK.encode() not in body
        assert server.unauthorized == 5
        nursery.cancel_scope.cancel()


def test_host_check_only_on_loopback():
    assert web.host_ok("127.0.0.1:80", "127.0.0.1") and web.host_ok("localhost:1", "127.0.0.1")
    assert not web.host_ok("attacker.test:80", "127.0.0.1")
    assert web.host_ok("192.168.1.5:8470", "0.0.0.0")


@pytest.mark.parametrize("text,expected", [("127.0.0.1:0", ("127.0.0.1", 0)), ("0.0.0.0:8470", ("0.0.0.0", 8470)),
                                           ("[::1]:9", ("::1", 9)), (":8470", ("127.0.0.1", 8470))])
def test_parse_listen(text, expected):
    from mycelium.netview.service import parse_listen

    assert parse_listen(text) == expected


def test_parse_listen_refuses_garbage():
    from mycelium.netview.service import UiError, parse_listen

    with pytest.raises(UiError, match="HOST:PORT"):
        parse_listen("127.0.0.1:http")


# ------------------------------------------------------------------------------ progress lines
def test_join_stages_in_order():
    from mycelium.cli.progress import JOIN_DONE, join_stage

    base = {"network_name": "fungi", "role": "none", "admitted": False, "epoch": 0, "primary_hash": None}
    seen = [join_stage({**base, "peers": 0, "role_reason": "not admitted yet: waiting for the network's chain"}),
            join_stage({**base, "peers": 1, "role_reason": "not admitted yet: waiting for the network's chain"}),
            join_stage({**base, "peers": 1, "epoch": 9, "primary_hash": "ab",
                        "role_reason": "not admitted yet: waiting for a validator to decide the join"}),
            join_stage({**base, "peers": 1, "epoch": 10, "primary_hash": "cd", "admitted": True, "role": "rhizomorph",
                        "role_reason": "validator set is full"})]
    assert [k for k, _ in seen] == ["connecting", "chain", "submitted", JOIN_DONE]
    assert "height 9" in seen[2][1] and seen[3][1].startswith("admitted as rhizomorph")


def test_deploy_line():
    from mycelium.cli.progress import deploy_line

    assert "waiting for the deploy" in deploy_line("web", None)
    row = {"running": 1, "up_to_date": 1, "desired": 2, "placement": {"12D3KooWaaaaaaaaBBBBBBBB": "running",
                                                                       "12D3KooWccccccccDDDDDDDD": "starting"}}
    assert deploy_line("web", row) == "web: 1/2 replicas up — BBBBBBBB: running, DDDDDDDD: starting"


async def test_connections_bounded_and_idle_ones_time_out(monkeypatch):
    """One slot: an idle client holds it until its request timeout; the next request then gets in."""
    monkeypatch.setattr(web, "REQUEST_TIMEOUT_S", 0.5)
    monkeypatch.setattr(web, "SLOT_WAIT_S", 30.0)
    server = web.WebServer("t", lambda: {}, lambda: ("text/plain", b""), max_connections=1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        idle = await trio.open_tcp_stream("127.0.0.1", port)  # connects, never asks
        await trio.sleep(0.05)
        started = trio.current_time()
        status, _, _ = await http(port, "/api/snapshot?token=t")
        assert status == 200 and trio.current_time() - started >= 0.3  # waited for the idle one's slot
        assert await idle.receive_some(10) == b""  # the idle client was closed without an answer
        await idle.aclose()
        nursery.cancel_scope.cancel()


def test_gauges_news_after_it_settles_read_only_at_once_drift_after_refresh():
    now = [0.0]
    pub = gauges.GaugesPublisher(clock=lambda: now[0])
    s = fake_session(3)
    assert pub.body(s) is None  # a fresh member waits for its numbers to settle (joins come in bursts)
    now[0] = gauges.SETTLE_S - 1
    assert pub.body(s) is None
    now[0] = gauges.SETTLE_S
    first = pub.body(s)
    assert first is not None and first["peers"] == 3
    s.ledger.height += 10  # drift: the same body until REFRESH_S, so the exchange does not republish
    now[0] += 5
    assert pub.body(s) is first
    s.mesh.peers()[0].latency_ms = None  # news (a link lost its ping time) waits to settle
    now[0] += 1
    assert pub.body(s) is first
    now[0] += gauges.SETTLE_S
    second = pub.body(s)
    assert second is not first and second["links"][s.mesh.peers()[0].node_id] == -1
    s.node.read_only = lambda: True  # read-only goes out at once
    now[0] += 0.1
    assert pub.body(s)["read_only"] == 1
    s.node.read_only = lambda: False
    now[0] += 0.1
    at = now[0]
    assert pub.body(s)["read_only"] == 0
    s.ledger.height += 1
    now[0] = at + gauges.REFRESH_S - 1
    assert pub.body(s)["epoch"] != s.ledger.height
    now[0] = at + gauges.REFRESH_S
    assert pub.body(s)["epoch"] == s.ledger.height
