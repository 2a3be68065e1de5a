"""Wheels of this checkout with another version (and optional source patches), for the self-upgrade
tests: written directly in the wheel format (a zip with a dist-info), so no build backend or network
is needed and a wheel takes well under a second. And venvs in install.sh's layout that reuse the
test interpreter's dependencies (a .pth), so a node's venv takes seconds."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "mycelium"


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path, version: str, patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """mycelium-VERSION-py3-none-any.whl from the checkout; `patches`: path → (old, new) text replaced."""
    patches = dict(patches or {})
    init = "mycelium/__init__.py"
    text = (SOURCE / "__init__.py").read_text()
    current = next(line for line in text.splitlines() if line.startswith("__version__"))
    patches.setdefault(init, (current, f'__version__ = "{version}"'))
    dist = f"mycelium-{version}.dist-info"
    path = Path(out_dir) / f"mycelium-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes) -> None:
            z.writestr(name, data)
            records.append(f"{name},{_digest(data)},{len(data)}")

        for f in sorted(SOURCE.rglob("*")):
            if f.is_dir() or "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            name = "mycelium/" + f.relative_to(SOURCE).as_posix()
            data = f.read_bytes()
            if name in patches:
                old, new = patches.pop(name)
                assert old.encode() in data, f"patch for {name} does not apply"
                data = data.replace(old.encode(), new.encode())
            add(name, data)
        assert not patches, f"patches for missing files: {sorted(patches)}"
        add(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: mycelium\nVersion: {version}\n\n".encode())
        add(f"{dist}/WHEEL", b"Wheel-Version: 1.0\nGenerator: mycelium-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        add(f"{dist}/entry_points.txt", b"[console_scripts]\nmycelium = mycelium.cli.main:main\n")
        z.writestr(f"{dist}/RECORD", "\n".join([*records, f"{dist}/RECORD,,"]) + "\n")
    return path


def make_install(root: Path, wheel: Path) -> Path:
    """ROOT/venv with `wheel` installed, as install.sh lays it out; returns its python."""
    from mycelium.release.switch import dependency_paths

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(site) / "_mycelium_dependencies.pth").write_text("".join(f"{p}\n" for p in dependency_paths()))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    return venv / "bin" / "python"


def copy_install(src_root: Path, root: Path) -> Path:
    """Another node's ROOT/venv, copied (its python is used as `python -m mycelium`: no script paths)."""
    shutil.copytree(src_root / "venv", root / "venv", symlinks=True)
    return root / "venv" / "bin" / "python"
