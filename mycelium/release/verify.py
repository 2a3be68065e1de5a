"""A fetched wheel is checked against its release before anything is installed (pure but for
reading the file): size and sha256 as published, the admin's signature over the publish operation
(kept in the Primary) still valid and its author an admin, and the wheel's own version and
protocols equal to what was published."""

from __future__ import annotations

from pathlib import Path

from mycelium.identity import verify
from mycelium.ledger.operation import ADMINS, Operation, OperationError
from mycelium.release.rules import state_of
from mycelium.release.wheel import WheelError, inspect
from mycelium.spores.primary import PrimarySpore


class ReleaseRefused(Exception):
    """The wheel is not the release the network decided on; the message says what does not match."""


def verify_wheel(primary: PrimarySpore, version: str, path: Path) -> None:
    record = state_of(primary.params)["published"].get(version)
    if record is None:
        raise ReleaseRefused(f"release {version} is not published in this network")
    try:
        op = Operation.from_wire(record["op"])
    except (OperationError, KeyError) as exc:
        raise ReleaseRefused(f"release {version} carries no readable signed operation: {exc}") from None
    member = primary.members.get(op.author)
    if not verify(op.author, op.signing_bytes(primary.network_id), op.signature, primary.network_id,
                  pq_key=member.pq_key if member is not None and member.pq_key else None):
        raise ReleaseRefused(f"release {version}: the admin's signature does not verify")
    if op.author not in primary.params.get(ADMINS, ()):
        raise ReleaseRefused(f"release {version} was signed by {op.author[:16]}, who is not an admin")
    if op.body.get("sha256") != record["sha256"] or op.body.get("version") != version:
        raise ReleaseRefused(f"release {version}: the signed operation does not name this wheel")
    try:
        info = inspect(Path(path))
    except WheelError as exc:
        raise ReleaseRefused(str(exc)) from None
    if info.sha256 != record["sha256"] or info.size != record["size"]:
        raise ReleaseRefused(f"wheel {path} does not match release {version}: sha256 {info.sha256[:16]}… "
                             f"({info.size} bytes), the release says {record['sha256'][:16]}… ({record['size']} bytes)")
    if info.version != version or info.protocols != record["protocols"]:
        raise ReleaseRefused(f"wheel {path} is version {info.version}, the release says {version}")
