"""Which of Mycelium's dependencies PyPI has no wheel for, on a given CPU, as pip's own resolver sees it.

pip cannot resolve for a foreign platform unless every package is a wheel (`--only-binary=:all:` with
`--platform`), and it stops at the first package that has none. So: resolve; when pip names a package
with no matching wheel, fetch that package's source distribution from PyPI, read its declared
dependencies, put a placeholder wheel with the same name, version and dependencies in a local
find-links folder, and resolve again — until the whole tree resolves. The placeholders are then exactly
the packages that a machine of that CPU builds from source, and each sdist's contents say whether that
build needs a C (or Cython/Rust) compiler or is pure Python.

Only PyPI is consulted (this machine's pip config, extra indexes and find-links are ignored). Markers
other than python_version are evaluated for the host, a limit of pip's `--platform`.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename

PYPI = "https://pypi.org/simple"
GLIBC_MINOR = 36  # Debian 12 bookworm / Raspberry Pi OS bookworm ship glibc 2.36


def platforms(machine: str) -> list[str]:
    """pip --platform values a bookworm machine of this CPU accepts (pip does not expand manylinux_2_Y)."""
    tags = [f"manylinux_2_{m}_{machine}" for m in range(GLIBC_MINOR, 4, -1)]
    if machine in ("x86_64", "aarch64"):
        tags += [f"manylinux2014_{machine}"]
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags + [f"linux_{machine}"]


@dataclass(frozen=True)
class SourceOnly:
    name: str
    version: str
    compiled: bool  # the sdist carries C/C++/Cython/Rust sources or declares extension modules
    evidence: str


@dataclass
class Coverage:
    machine: str
    wheels: dict[str, str]  # name -> version, resolved to a wheel for this CPU
    source_only: dict[str, SourceOnly]

    def needs_compiler(self) -> set[str]:
        return {n for n, s in self.source_only.items() if s.compiled}


def pypi_reachable(timeout: float = 15) -> str | None:
    """None if PyPI's simple index answers, else why not."""
    try:
        with urllib.request.urlopen(f"{PYPI}/pip/", timeout=timeout) as r:
            r.read(1)
        return None
    except OSError as e:
        return f"{PYPI} is unreachable ({e})"


def _get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def _sdist(name: str, spec: str) -> tuple[str, str, bytes]:
    """(name, version, bytes) of the newest sdist of `name` on PyPI satisfying `spec`."""
    page = json.loads(_get(f"{PYPI}/{canonicalize_name(name)}/", "application/vnd.pypi.simple.v1+json"))
    req = Requirement(f"{name}{spec}")
    best = None
    for f in page["files"]:
        if f.get("yanked") or not f["filename"].endswith((".tar.gz", ".zip")):
            continue
        try:
            pname, ver = parse_sdist_filename(f["filename"])
        except ValueError:
            continue
        if req.specifier.contains(ver, prereleases=False) and (best is None or ver > best[0]):
            best = (ver, f["url"])
    if best is None:
        raise AssertionError(f"{name}{spec}: PyPI has neither a wheel for this platform nor an sdist")
    return page["name"], str(best[0]), _get(best[1])


def _read_sdist(blob: bytes) -> tuple[list[str], bool, str]:
    """(requirements, compiled?, evidence) from an sdist's files."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
            for m in tf.getmembers():
                if m.isfile():
                    members[m.name] = tf.extractfile(m).read() if m.size < 2_000_000 else b""
    except tarfile.ReadError:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
    sources = sorted(n for n in members if n.endswith((".c", ".cc", ".cpp", ".pyx", ".rs")) or n.endswith("Cargo.toml"))
    setup = next((v.decode(errors="replace") for n, v in members.items() if n.count("/") == 1 and n.endswith("/setup.py")), "")
    ext = re.search(r"\bExtension\s*\(|ext_modules|cffi_modules", setup)
    compiled = bool(sources or ext)
    evidence = (f"{len(sources)} native source file(s), e.g. {sources[0].split('/', 1)[-1]}" if sources
                else "setup.py declares extension modules" if ext else "no native sources")
    reqs: list[str] = []
    requires_txt = next((v.decode() for n, v in members.items() if n.endswith(".egg-info/requires.txt")), None)
    pkg_info = next((v.decode(errors="replace") for n, v in members.items() if n.count("/") == 1 and n.endswith("/PKG-INFO")), "")
    if requires_txt is not None:
        marker = ""
        for line in requires_txt.splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
                marker = None if not section.startswith(":") else section[1:]  # [extra] sections are skipped
                continue
            if line and marker is not None:
                reqs.append(f"{line}; {marker}" if marker else line)
    else:
        reqs = re.findall(r"^Requires-Dist:\s*(.+)$", pkg_info, re.M)
    return reqs, compiled, evidence


def _placeholder_wheel(folder: Path, name: str, version: str, reqs: list[str]) -> None:
    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    meta = "".join(["Metadata-Version: 2.1\n", f"Name: {name}\n", f"Version: {version}\n",
                    *[f"Requires-Dist: {r}\n" for r in reqs]])
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", meta)
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")


_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*([^;\s]*)")


def coverage(machine: str, requirements: list[str], workdir: Path, python_version: str = "3.11",
             known_source_only: tuple[str, ...] = (), max_rounds: int = 40) -> Coverage:
    """Resolve `requirements` for `machine`, discovering the source-only packages one pip round each.

    `known_source_only` (requirement strings) get their placeholders before the first round, which saves a
    round each; whether they truly lack a wheel is for the caller to check (`wheels_for`)."""
    stubs = workdir / f"source-only-{machine}"
    stubs.mkdir(parents=True, exist_ok=True)
    report = workdir / f"report-{machine}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull  # PyPI only: none of this machine's local indexes or find-links
    abi = "cp" + python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "--ignore-installed",
           "--quiet", "--report", str(report), "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "--abi", abi, "--target", str(workdir / "target"),
           "--index-url", PYPI, "--find-links", str(stubs)]
    for p in platforms(machine):
        cmd += ["--platform", p]
    source_only: dict[str, SourceOnly] = {}

    def add_placeholder(name: str, spec: str) -> None:
        name, version, blob = _sdist(name, spec)
        reqs, compiled, evidence = _read_sdist(blob)
        _placeholder_wheel(stubs, name, version, reqs)
        source_only[str(canonicalize_name(name))] = SourceOnly(name, version, compiled, evidence)

    for known in known_source_only:
        req = Requirement(known)
        add_placeholder(req.name, str(req.specifier))
    for _ in range(max_rounds):
        r = subprocess.run([*cmd, *requirements], capture_output=True, text=True, env=env, timeout=600)
        if r.returncode == 0:
            break
        m = _NO_MATCH.search(r.stderr)
        if not m:
            raise AssertionError(f"pip could not resolve for {machine}, and not for a missing wheel:\n{r.stderr[-3000:]}")
        if str(canonicalize_name(m.group(1))) in source_only:
            raise AssertionError(f"{m.group(1)}: a placeholder wheel was made and pip still finds none:\n{r.stderr[-2000:]}")
        add_placeholder(m.group(1), m.group(2))
    else:
        raise AssertionError(f"{machine}: still unresolved after {max_rounds} rounds")
    wheels = {str(canonicalize_name(i["metadata"]["name"])): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    for key in source_only:
        wheels.pop(key, None)
    return Coverage(machine, wheels, source_only)


def wheels_for(name: str, version: str, machine: str, python_version: str = "3.11") -> list[str]:
    """The wheel files PyPI has for name==version that a CPython of that version on `machine` would install."""
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename
    py = tuple(int(x) for x in python_version.split("."))
    plats = platforms(machine)
    supported = set(cpython_tags(py, None, plats)) | set(compatible_tags(py, f"cp{py[0]}{py[1]}", plats))
    page = json.loads(_get(f"{PYPI}/{canonicalize_name(name)}/", "application/vnd.pypi.simple.v1+json"))
    out = []
    for f in page["files"]:
        if not f["filename"].endswith(".whl"):
            continue
        _, ver, _, tags = parse_wheel_filename(f["filename"])
        if str(ver) == version and tags & supported:
            out.append(f["filename"])
    return out


def mycelium_requirements(pyproject: Path) -> list[str]:
    import tomllib
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def describe(cov: Coverage) -> str:
    lines = [f"{cov.machine}: {len(cov.wheels)} wheels, {len(cov.source_only)} built from source:"]
    lines += [f"  {s.name}=={s.version}: {'needs a C compiler' if s.compiled else 'pure Python'} ({s.evidence})"
              for s in sorted(cov.source_only.values(), key=lambda s: s.name.lower())]
    return "\n".join(lines)


def missing_wheels(pins: dict[str, str], machine: str, python_version: str = "3.11") -> list[str]:
    """Of these exact versions, the ones PyPI has no wheel for on `machine` (one index page each, in parallel)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        found = dict(zip(pins, pool.map(lambda nv: wheels_for(nv[0], nv[1], machine, python_version), pins.items())))
    return sorted(n for n, files in found.items() if not files)
