"""Issue 20, bad input: before anything is installed a wheel must be the release the network
decided on — its sha256 and size, the admin's signature over the publish operation, its own version;
the supervisor rolls a trial back when the new version exits or never passes its health check."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import replace

import pytest

from mycelium.ledger.operations import OpType, apply_batch, sign_operation
from mycelium.release import rules, supervise
from mycelium.release.verify import ReleaseRefused, verify_wheel
from mycelium.release.versions import PROTOCOLS
from mycelium.release.wheel import WheelError, inspect
from tests.integration.release_wheels import build_wheel
from tests.unit.test_release_core import KEYS, NOW, genesis_net, network


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("w"), "0.1.1")


def published(wheel, *, key=KEYS[0], version="0.1.1"):
    info = inspect(wheel)
    base = network()  # its reports take sequences first
    op = sign_operation(key, genesis_net(), OpType.RELEASE,
                        rules.publish_body(version, info.sha256, info.size, "0.1.0", "", info.protocols), now_s=NOW)
    return apply_batch(base, [op.to_wire()])


def test_the_published_wheel_verifies(wheel):
    info = inspect(wheel)
    assert info.version == "0.1.1" and info.protocols == PROTOCOLS and len(info.sha256) == 64
    verify_wheel(published(wheel), "0.1.1", wheel)


def test_a_tampered_wheel_is_refused(wheel, tmp_path):
    p = published(wheel)
    other = build_wheel(tmp_path, "0.1.1", {"mycelium/release/health.py": ("return member and", "return True or")})
    with pytest.raises(ReleaseRefused, match="does not match release 0.1.1: sha256"):
        verify_wheel(p, "0.1.1", other)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ReleaseRefused, match="not a readable wheel"):
        verify_wheel(p, "0.1.1", junk)


def test_a_forged_or_foreign_signature_is_refused(wheel):
    p = published(wheel)
    state = rules.state_of(p.params)
    record = state["published"]["0.1.1"]
    forged = {**record, "op": {**record["op"], "sig": bytes(64)}}
    bad = replace(p, params={**p.params, rules.KEY: {**state, "published": {"0.1.1": forged}}})
    with pytest.raises(ReleaseRefused, match="signature does not verify"):
        verify_wheel(bad, "0.1.1", wheel)
    not_admin = replace(p, params={**p.params, "admins": [KEYS[1].node_id]})
    with pytest.raises(ReleaseRefused, match="not an admin"):
        verify_wheel(not_admin, "0.1.1", wheel)
    with pytest.raises(ReleaseRefused, match="not published"):
        verify_wheel(p, "0.2.0", wheel)


def test_files_that_are_not_mycelium_wheels_say_why(wheel, tmp_path):
    with pytest.raises(WheelError, match="not a wheel"):
        inspect(tmp_path / "x.tar.gz")
    foreign = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("other-1.0.dist-info/METADATA", "Name: other\nVersion: 1.0\n\n")
    with pytest.raises(WheelError, match="a wheel of 'other', not of mycelium"):
        inspect(foreign)
    old = tmp_path / "mycelium-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(old, "w") as z:
        z.writestr("mycelium-0.0.1.dist-info/METADATA", "Name: mycelium\nVersion: 0.0.1\n\n")
    with pytest.raises(WheelError, match="without self-upgrade"):
        inspect(old)


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_the_supervisor_judges_a_trial(tmp_path):
    from mycelium.release.switch import health_path, write_json

    record = {"version": "0.1.1", "health_timeout_s": 0.5}
    slow = _child("import time; time.sleep(30)")
    try:
        assert supervise.trial(slow, record, tmp_path) == "its health check did not pass within 0.5 s"
    finally:
        supervise.stop(slow)
    assert slow.poll() is not None
    dead = _child("raise SystemExit(3)")
    assert supervise.trial(dead, {**record, "health_timeout_s": 30}, tmp_path) == \
        "the new version exited with code 3 before its health check passed"
    ok = _child("import time; time.sleep(30)")
    try:
        write_json(health_path(tmp_path), {"version": "0.1.0", "pid": ok.pid})  # another version: not it
        write_json(health_path(tmp_path), {"version": "0.1.1", "pid": ok.pid})
        assert supervise.trial(ok, {**record, "health_timeout_s": 30}, tmp_path) is None
    finally:
        supervise.stop(ok)
