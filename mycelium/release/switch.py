"""The local switch-over (the only part of self-upgrade that changes the machine).

Layout (what install.sh makes, under its prefix ROOT):
    ROOT/venv            the virtualenv install.sh made
    ROOT/venvs/VERSION   one virtualenv per release installed by self-upgrade
    ROOT/current         symlink to the virtualenv in use (the `mycelium` command goes through it)
    ROOT/previous        symlink to the one before, kept for rollback
Only `current`, `previous` and the running virtualenv are kept; older release venvs are removed.

A release venv is created beside the running one and reuses its dependencies (a .pth naming the
running interpreter's site directories): installing it takes seconds and fetches nothing. A release
that needs a dependency the running venv lacks fails its health check and rolls back; install such
a release by hand (./install.sh).

The switch: the agent writes the switch record STATE/release/switch.json (fsynced), points
`current` at the new venv, and stops the daemon cleanly; the process then becomes (exec, same pid)
or returns to the supervisor (mycelium.release.supervise), which runs the new version on trial.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from mycelium.durable import fsync_dir

SWITCH_EXIT = 75  # a supervised daemon exits with this to ask its supervisor for the switch
SUPERVISED_ENV = "MYCELIUM_SUPERVISOR_PID"  # set in a supervised daemon: its supervisor's pid (the lock shows it)
INSTALL_TIMEOUT_S = 300
COMPLETE = ".mycelium-release-complete"  # written last in a release venv: it is whole


class SwitchError(Exception):
    """The release could not be installed or switched to; the message says why (nothing changed)."""


def release_dir(state_dir: Path) -> Path:
    d = Path(state_dir) / "release"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def layout_root(prefix: str | None = None) -> Path | None:
    """ROOT of the install.sh layout the running interpreter belongs to (None: another layout,
    e.g. a development checkout, which self-upgrade leaves alone). MYCELIUM_RELEASE_ROOT overrides."""
    if os.environ.get("MYCELIUM_RELEASE_ROOT"):
        return Path(os.environ["MYCELIUM_RELEASE_ROOT"])
    venv = Path(prefix or sys.prefix)
    if venv.name == "venv":
        return venv.parent
    if venv.parent.name == "venvs":
        return venv.parent.parent
    return None


def current_venv(root: Path) -> Path:
    link = root / "current"
    return Path(os.path.realpath(link)) if link.is_symlink() else root / "venv"


def _relink(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def point_current(root: Path, venv: Path) -> None:
    """`current` → venv; `previous` → what current was (when it changes)."""
    old = current_venv(root)
    if old != venv:
        _relink(root / "previous", old)
    _relink(root / "current", venv)


def dependency_paths() -> list[str]:
    """The running interpreter's site directories (its venv's and any its .pth files added)."""
    stdlib = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    return [p for p in dict.fromkeys(sys.path) if p and p not in stdlib and os.path.basename(p) in ("site-packages", "dist-packages")]


def install(root: Path, wheel: Path, version: str) -> Path:
    """A new venv ROOT/venvs/VERSION with the wheel installed (no index, no dependencies fetched);
    returns its path. Idempotent: a complete one (marked by COMPLETE after its check) is reused;
    a half-made one is removed first."""
    venv = root / "venvs" / version
    python = venv / "bin" / "python"
    if (venv / COMPLETE).exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "create the virtualenv")
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
        if not site:
            raise SwitchError(f"the new virtualenv's python ({python}) does not run")
        (Path(site) / "_mycelium_dependencies.pth").write_text("".join(f"{p}\n" for p in dependency_paths()))
        named = venv / f"mycelium-{version}-py3-none-any.whl"  # pip wants a wheel's file name to be one
        shutil.copyfile(wheel, named)
        _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
              "--ignore-installed", "--no-compile", "--disable-pip-version-check", "--no-warn-script-location", str(named)], "install the wheel")
        named.unlink()
        if not _reports_version(python, version):
            raise SwitchError(f"the installed release does not import as version {version} (the wheel's METADATA "
                              "and its mycelium.__version__ disagree, or it does not import)")
        (venv / COMPLETE).write_text(version + "\n")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    return venv


def _reports_version(python: Path, version: str) -> bool:
    try:
        out = subprocess.run([str(python), "-c", "import mycelium; print(mycelium.__version__)"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def _run(cmd: list[str], what: str) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SwitchError(f"could not {what}: {exc}") from None
    if res.returncode != 0:
        raise SwitchError(f"could not {what}: {(res.stderr or res.stdout).strip()[-500:]}")


def prune(root: Path, keep: set[Path]) -> None:
    """Remove release venvs other than current, previous and `keep` (bounded disk use)."""
    venvs = root / "venvs"
    if not venvs.is_dir():
        return
    wanted = {Path(os.path.realpath(p)) for p in (root / "current", root / "previous") if p.is_symlink()} | keep
    for d in venvs.iterdir():
        if not d.name.startswith(".") and Path(os.path.realpath(d)) not in wanted:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------ the switch record


def record_path(state_dir: Path) -> Path:
    return release_dir(state_dir) / "switch.json"


def health_path(state_dir: Path) -> Path:
    return release_dir(state_dir) / "health.json"


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def daemon_args() -> list[str]:
    """This daemon's command line after the interpreter (`-m mycelium …`), to start it again."""
    return ["-P", "-m", "mycelium", *sys.argv[1:]]  # -P: never a `mycelium` in the working directory


def after_daemon_exit(node, code: int) -> int:
    """Called once the daemon stopped. A switch was asked for: become the supervisor (exec: same
    pid, same process group) or, already supervised, hand it back with SWITCH_EXIT."""
    if not getattr(node, "release_switch", False):
        return code
    if os.environ.get(SUPERVISED_ENV):
        return SWITCH_EXIT
    sys.stdout.flush()
    sys.stderr.flush()
    python = sys.executable
    os.execv(python, [python, "-P", "-m", "mycelium.release.supervise", str(node.cfg.state_dir)])
    return code  # not reached
