"""`volumes:` in an Endomycete manifest: parsed into the spec, strict on the wire, clear errors for a
bad name or mount path, and the deploy refusal's reasons (no store, no FUSE, unknown volume)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mycelium.runtime.manifest import ManifestError, parse_manifest
from mycelium.runtime.spec import ServiceSpec, SpecError, VolumeMount
from mycelium.storage import workload_mounts

BASE = """\
apiVersion: mycelium/v1
kind: Endomycete
name: app
spec:
  command: [sh, -c, "sleep 1"]
{extra}"""


def manifest(extra: str) -> str:
    return BASE.format(extra=extra)


def test_volumes_parse_and_round_trip_and_leave_specs_without_them_unchanged():
    spec = parse_manifest(manifest("  volumes:\n    - {name: app-data, path: var/data}\n"))
    assert spec.volumes == (VolumeMount("app-data", "var/data"),)
    assert ServiceSpec.from_wire(spec.to_wire()) == spec
    plain = parse_manifest(manifest(""))
    assert "volumes" not in plain.to_wire()  # versions of specs deployed before volumes existed do not move
    assert plain.version() != spec.version()


@pytest.mark.parametrize("entry, words", [
    ("{name: app, path: /srv}", "expected a relative directory"),
    ("{name: app, path: a/../b}", "expected a relative directory"),
    ("{name: app, path: a//b}", "has an empty, '.' or '..' part"),
    ("{name: App, path: data}", "expected a volume name"),
    ("{name: app}", "path"),
    ("{name: app, path: data, mode: 1}", "mode"),
])
def test_bad_volume_entries_name_the_field(entry, words):
    with pytest.raises(ManifestError, match="spec.volumes") as info:
        parse_manifest(manifest(f"  volumes:\n    - {entry}\n"))
    assert words in str(info.value)


def test_at_most_one_volume_and_no_working_file_inside_it():
    with pytest.raises(ManifestError, match="at most one volume"):
        parse_manifest(manifest("  volumes:\n    - {name: a, path: x}\n    - {name: b, path: y}\n"))
    with pytest.raises(ManifestError, match="inside the mount path 'data'"):
        parse_manifest(manifest("  files:\n    - {path: data/conf, content: x}\n  volumes:\n    - {name: a, path: data}\n"))


def test_the_wire_refuses_a_volume_that_leaves_the_working_directory():
    wire = parse_manifest(manifest("  volumes:\n    - {name: app, path: data}\n")).to_wire()
    for bad in ({"name": "app", "path": "../up"}, {"name": "Bad!", "path": "data"}, {"name": "app", "path": ""}):
        with pytest.raises(SpecError, match="volume"):
            ServiceSpec.from_wire({**wire, "volumes": [bad]})


def test_deploy_refusal_says_what_why_and_what_next(monkeypatch):
    vols = (VolumeMount("app", "data"),)
    head = SimpleNamespace(params={"volumes": {"app": {}}})
    assert workload_mounts.deploy_refusal((), head, None) is None
    what, hint = workload_mounts.deploy_refusal(vols, head, None, "this build's mesh has no data channel")
    assert "not running on this node" in what and "no data channel" in what and "storage status" in hint
    monkeypatch.setattr(workload_mounts, "fuse_unavailable", lambda: "/dev/fuse is missing")
    what, hint = workload_mounts.deploy_refusal(vols, head, object())
    assert "/dev/fuse is missing" in what and "without `volumes:`" in hint
    monkeypatch.setattr(workload_mounts, "fuse_unavailable", lambda: None)
    assert workload_mounts.deploy_refusal(vols, head, object()) is None
    what, hint = workload_mounts.deploy_refusal((VolumeMount("other", "d"),), head, object())
    assert "'other' does not exist" in what and "mycelium storage put FILE --volume other" in hint
