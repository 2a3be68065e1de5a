"""`python -m mycelium.runtime check` validates manifests and reports problems on stderr."""

from __future__ import annotations

from pathlib import Path

from mycelium.runtime.__main__ import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_check_accepts_the_examples(capsys):
    assert main(["check", str(EXAMPLES / "static-web.yaml"), str(EXAMPLES / "echo.yaml")]) == 0
    assert "static-web.yaml: ok (static-web" in capsys.readouterr().out


def test_check_reports_file_line_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: mycelium/v1\nkind: Endomycete\nname: x\nspec:\n  command: true\n  replicas: -1\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: spec.command" in err and f"{bad}:6: spec.replicas" in err
