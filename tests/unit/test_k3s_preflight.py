"""install.sh --k3s's checks: each missing prerequisite named with its fix; the [k3s] config section."""

from __future__ import annotations

import tomllib

import pytest

from mycelium.runtime.k3s.preflight import BadBinary, checks, k3s_version, main, write_config
from tests.k3s_helpers import standin_binary


def test_the_standin_reports_a_k3s_version(tmp_path):
    assert k3s_version(str(standin_binary(tmp_path))) == "v1.36.2+k3s1"


def test_something_that_is_not_k3s_is_refused(tmp_path):
    fake = tmp_path / "k3s"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    with pytest.raises(BadBinary, match="does not look like K3s"):
        k3s_version(str(fake))
    with pytest.raises(BadBinary, match="not an executable file"):
        k3s_version(str(tmp_path / "absent"))
    assert main(["--state-dir", str(tmp_path), "--binary", str(fake)]) == 2


def test_a_missing_binary_is_named_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no k3s (and no wg, ip …) anywhere
    assert main(["--state-dir", str(tmp_path / "state"), "--write-config"]) == 3
    out = capsys.readouterr().out
    assert "missing  k3s binary" in out and "--k3s-binary" in out and "process runtime" in out
    cfg = tomllib.loads((tmp_path / "state/config.toml").read_text())
    assert cfg["k3s"] == {"enabled": True, "binary": ""}


def test_all_present_passes(tmp_path, capsys):
    results = checks(str(standin_binary(tmp_path)))
    assert results[0].ok and "v1.36.2+k3s1" in results[0].detail
    by_name = {c.name: c for c in results}
    assert set(by_name) == {"k3s binary", "root", "ip", "wg", "WireGuard"}
    for c in results:
        assert c.ok or c.detail, c  # a failed check always says what to do


def test_config_section_is_replaced_and_the_rest_kept(tmp_path):
    (tmp_path / "config.toml").write_text('[node]\nmax_role = "rhizomorph"\n\n[k3s]\nenabled = false\n\n[log]\nlevel = "debug"\n')
    write_config(tmp_path, "/usr/local/bin/k3s")
    cfg = tomllib.loads((tmp_path / "config.toml").read_text())
    assert cfg == {"node": {"max_role": "rhizomorph"}, "k3s": {"enabled": True, "binary": "/usr/local/bin/k3s"},
                   "log": {"level": "debug"}}
    write_config(tmp_path, "/opt/k3s")
    assert tomllib.loads((tmp_path / "config.toml").read_text())["k3s"]["binary"] == "/opt/k3s"
