"""The daemon's imports leave rich out (structlog.dev would import it only for terminal tracebacks:
3.8 MiB and ~30 ms of every start, bench idle), and rich still works when the CLI asks for it."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


def test_the_daemon_imports_no_rich_and_the_cli_still_can():
    out = _run("import sys, mycelium.daemon, mycelium.session, mycelium.mesh.host, mycelium.cli.main; "
               "print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.'))); "
               "import rich.console; print(rich.console.Console)")
    first, second = out.splitlines()
    assert first == "[]", first
    assert "rich.console.Console" in second


def test_console_logs_still_carry_the_traceback():
    out = _run("import io\n"
               "from mycelium.observability.logs import configure_logging, structlog\n"
               "s = io.StringIO(); configure_logging('info', json=False, stream=s)\n"
               "try:\n    1 / 0\n"
               "except ZeroDivisionError:\n    structlog.get_logger('t').exception('boom')\n"
               "print(s.getvalue())")
    assert "boom" in out and "ZeroDivisionError: division by zero" in out and "Traceback" in out
