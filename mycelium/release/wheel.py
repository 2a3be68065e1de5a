"""What a release wheel is, read from the file without installing or running it.

`inspect(path)`: the wheel's version (its METADATA), the protocols it speaks (the PROTOCOLS literal
in its mycelium/release/versions.py, read with ast.literal_eval) and its sha256 and size. A file
that is not a mycelium wheel says so and why.
"""

from __future__ import annotations

import ast
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mycelium.release.rules import MAX_WHEEL_BYTES
from mycelium.release.versions import VersionError, check_protocols, parse_version

VERSIONS_MODULE = "mycelium/release/versions.py"


class WheelError(ValueError):
    """The file is not a usable mycelium release wheel; the message says why."""


@dataclass(frozen=True, slots=True)
class WheelInfo:
    version: str
    protocols: dict
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect(path: Path) -> WheelInfo:
    path = Path(path)
    if path.suffix != ".whl":
        raise WheelError(f"{path} is not a wheel (a release is a .whl file, e.g. from `pip wheel --no-deps .`)")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WheelError(f"cannot read {path}: {exc.strerror}") from None
    if not 0 < size <= MAX_WHEEL_BYTES:
        raise WheelError(f"{path} is {size} bytes; a release wheel is 1 byte to {MAX_WHEEL_BYTES >> 20} MiB")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            metadata = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(metadata) != 1:
                raise WheelError(f"{path} has no single *.dist-info/METADATA: not a wheel")
            fields = _metadata(z.read(metadata[0]).decode("utf-8", "replace"))
            if fields.get("name", "").lower() != "mycelium":
                raise WheelError(f"{path} is a wheel of {fields.get('name')!r}, not of mycelium")
            if VERSIONS_MODULE not in names:
                raise WheelError(f"{path} has no {VERSIONS_MODULE}: a mycelium build without self-upgrade")
            protocols = _protocols(z.read(VERSIONS_MODULE).decode("utf-8", "replace"))
    except (zipfile.BadZipFile, OSError) as exc:
        raise WheelError(f"{path} is not a readable wheel (zip): {exc}") from None
    version = fields.get("version", "")
    try:
        parse_version(version)
        check_protocols(protocols)
    except VersionError as exc:
        raise WheelError(f"{path}: {exc}") from None
    return WheelInfo(version, protocols, sha256_of(path), size)


def _metadata(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the body (long description) follows the headers
        key, sep, value = line.partition(":")
        if sep and key.lower() in ("name", "version"):
            fields[key.lower()] = value.strip()
    return fields


def _protocols(source: str) -> dict:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise WheelError(f"its {VERSIONS_MODULE} does not parse: {exc}") from None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "PROTOCOLS" and node.value is not None:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                break
    raise WheelError(f"its {VERSIONS_MODULE} has no literal PROTOCOLS table")
