"""`mycelium logs NAME --node ID` (mycelium.runtime.remote_logs): member matching, the answer's
bounds, and the handler/decoder pair refusing what does not decode."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from mycelium.encoding import canonical
from mycelium.runtime import remote_logs
from mycelium.runtime.runner import MAX_LOG_LINES, NoSuchReplica, ReplicaElsewhere

A = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1"
B = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB2"


def test_match_member_by_id_prefix_or_suffix():
    assert remote_logs.match_member([A, B], A) == A
    assert remote_logs.match_member([A, B], "12D3KooWB") == B
    assert remote_logs.match_member([A, B], B[-8:]) == B
    with pytest.raises(remote_logs.NodeNotFound, match="2 members"):
        remote_logs.match_member([A, B], "12D3Ko")
    with pytest.raises(remote_logs.NodeNotFound, match="no member"):
        remote_logs.match_member([A, B], "zzzzzzzz")
    with pytest.raises(remote_logs.NodeNotFound, match="at least 6"):
        remote_logs.match_member([A, B], "AA1")


def test_trim_keeps_the_newest_lines_within_the_byte_bound(monkeypatch):
    monkeypatch.setattr(remote_logs, "MAX_ANSWER_BYTES", 100)
    lines = [f"line {i:03d}" for i in range(50)]  # 8 characters + 8 of framing each
    out = remote_logs.trim(lines)
    assert out == lines[-len(out):] and 0 < len(out) and sum(len(l) + 8 for l in out) <= 100
    assert len(remote_logs.trim(["x"] * (MAX_LOG_LINES + 5))) <= MAX_LOG_LINES


def session_with(logs):
    async def read(name, lines):
        return logs(name, lines)
    return SimpleNamespace(workloads=SimpleNamespace(logs=read), rejected=Counter())


async def test_handler_answers_lines_and_reasons():
    def logs(name, lines):
        if name == "gone":
            raise ReplicaElsewhere("placed on 11111111")
        if name == "nope":
            raise NoSuchReplica("no replica of 'nope' on this node")
        return [f"{name} {i}" for i in range(lines)]
    session = session_with(logs)
    handle = remote_logs.make_handler(session)
    assert remote_logs.decode_answer(await handle(A, remote_logs.encode_request("web", 3)), "x") == ["web 0", "web 1", "web 2"]
    with pytest.raises(ReplicaElsewhere, match="node x: placed on"):
        remote_logs.decode_answer(await handle(A, remote_logs.encode_request("gone", 3)), "x")
    with pytest.raises(NoSuchReplica):
        remote_logs.decode_answer(await handle(A, remote_logs.encode_request("nope", 3)), "x")
    answer = await handle(A, b"\xc1 garbage")
    assert session.rejected["logs_malformed"] == 1
    with pytest.raises(NoSuchReplica, match="malformed"):
        remote_logs.decode_answer(answer, "x")


@pytest.mark.parametrize("data", [b"\xc1", canonical([1, 2]), canonical({"lines": [1]}),
                                  canonical({"lines": ["x"] * (MAX_LOG_LINES + 1)})])
def test_decode_refuses_malformed_answers(data):
    with pytest.raises(remote_logs.NodeUnreachable):
        remote_logs.decode_answer(data, "x")
