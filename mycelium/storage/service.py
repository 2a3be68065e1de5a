"""The distributed store inside a running daemon: a `StorageNode` + `Repairer` fed by the Primary.

The session starts it with the mesh as the data-channel provider:

    storage = StorageService(session, provider=mesh)
    await nursery.start(storage.run)

- Storage devices are the Primary's live sclerotia and rhizomorphs (hyphae store nothing).
- Volume roots and leases are the Primary's params["volumes"] (`PrimaryRoots`); a commit is a
  signed `volume` operation, acknowledged once a decided Primary shows it.
- Volume keys: HKDF from the network secret of the generation that sealed each chunk; earlier
  generations come from the Primary's sealed past secrets after a rotation (`storage.keyring`). (A volume declared with an admin-held key needs that key
  handed to the daemon; not wired yet: such volumes are refused with that reason.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from mycelium.ledger.governance import secret_generation
from mycelium.ledger.operations import TIME, OpType, last_sequence, liveness, sign_operation
from mycelium.mesh.channel import ChannelProvider
from mycelium.observability.logs import get_logger
from mycelium.storage.catalog import VolumeRoot
from mycelium.storage.node import StorageConfig, StorageNode
from mycelium.storage.repair import RepairConfig
from mycelium.storage.repairer import LoopConfig, Repairer
from mycelium.storage.roots import RootConflict
from mycelium.storage.gc import GcConfig
from mycelium.storage.keyring import PARAM as PAST_PARAM
from mycelium.storage.keyring import Keyring, KeyringError
from mycelium.storage.shares import ShareStore
from mycelium.storage.volumes import LEASE_S, VOLUMES, check_name

log = get_logger("mycelium.storage")

STORAGE_ROLES = ("sclerotium", "rhizomorph")
DECIDE_TIMEOUT_S = 60.0  # a volume operation not in a decided Primary by then counts as refused
DEFAULT_VOLUME = "default"


class PrimaryRoots:
    """RootStore over the ledger: reads the head Primary, writes by submitting `volume` operations."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def _head(self):
        return self.session.ledger.head

    def _vols(self) -> dict:
        head = self._head()
        return head.params.get(VOLUMES, {}) if head else {}

    async def root(self, volume: str) -> VolumeRoot | None:
        raw = self._vols().get(volume, {}).get("root")
        return VolumeRoot.from_wire(raw) if raw else None

    async def lease_holder(self, volume: str) -> str | None:
        vol = self._vols().get(volume)
        head = self._head()
        if not vol or not vol.get("lease") or vol.get("lease_until_s", 0) <= head.params.get(TIME, 0):
            return None
        return vol["lease"]

    async def volumes(self) -> list[str]:
        return sorted(self._vols())

    async def _submit_and_wait(self, body: dict, done) -> bool:
        """Submit a volume operation; True once a decided Primary satisfies `done`. False when the
        operation was decided without effect or nothing happened within DECIDE_TIMEOUT_S."""
        key, net = self.session.key, self.session.membership.network_id
        op = sign_operation(key, net, OpType.VOLUME, body, now_s=int(time.time()))
        with trio.move_on_after(DECIDE_TIMEOUT_S):
            await self.session.submit(op)
            resubmit_at = trio.current_time() + 5.0
            while True:
                if done(self._vols()):
                    return True
                head = self._head()
                # applied (or overtaken by a later operation of ours): the author's sequence moved past it
                if head is not None and last_sequence(head.params, key.node_id) >= op.seq:
                    return done(self._vols())
                if trio.current_time() > resubmit_at:  # a validator may have dropped it (changed seats)
                    await self.session.submit(op)
                    resubmit_at = trio.current_time() + 5.0
                await trio.sleep(0.1)
        log.warning("volume operation not decided in time", action=body.get("action"), volume=body.get("name"))
        return False

    async def commit(self, root: VolumeRoot, *, expect_seq: int) -> None:
        body = {"action": "root", "name": root.volume, "root": root.to_wire(), "expect_seq": expect_seq}
        wire = root.to_wire()
        if not await self._submit_and_wait(body, lambda vols: vols.get(root.volume, {}).get("root") == wire):
            raise RootConflict(f"the Primary did not take root seq {root.seq} of {root.volume!r} (lease lost, "
                               "another writer, or no quorum); see `mycelium storage status`")

    async def ensure_writer(self, volume: str) -> None:
        """Declare the volume if needed and hold its lease (renewed when a third of it is left)."""
        me = self.session.key.node_id
        check_name(volume)
        if volume not in self._vols():
            if not await self._submit_and_wait({"action": "declare", "name": volume, "key": "network"},
                                               lambda vols: volume in vols):
                raise RootConflict(f"volume {volume!r} could not be declared (only admins may); ask an admin")
        vol = self._vols()[volume]
        now = self._head().params.get(TIME, 0)
        if vol.get("lease") == me and vol.get("lease_until_s", 0) - now > LEASE_S // 3:
            return
        if not await self._submit_and_wait({"action": "lease", "name": volume},
                                           lambda vols: vols.get(volume, {}).get("lease") == me
                                           and vols[volume].get("lease_until_s", 0) > now):
            holder = vol.get("lease", "")
            raise RootConflict(f"volume {volume!r} is being written by {holder[:16] or 'another node'}; one writer "
                               "node per volume: write through that node or wait for its lease to expire")


class StorageService:
    def __init__(self, session: Any, provider: ChannelProvider, *, cfg: StorageConfig = StorageConfig(),
                 repair: RepairConfig = RepairConfig(), loop: LoopConfig = LoopConfig(), gc: GcConfig = GcConfig()) -> None:
        self.session = session
        self.roots = PrimaryRoots(session)
        membership = session.membership
        self._ring: Keyring | None = None
        self._learned: bytes | None = None  # the sealed past we last opened
        self.node = StorageNode(
            session.key,
            provider,
            ShareStore(Path(session.cfg.state_dir) / "shares"),
            self.roots,
            devices=self.devices,
            volume_key=lambda v: self.keyring().write(v),
            read_key=lambda v, gen: self.keyring().read(v, gen),
            network_id=membership.network_id,
            cfg=cfg,
        )
        self.repairer = Repairer(self.node, repair, loop, gc)

    def keyring(self) -> Keyring:
        """The secrets this node holds now: the session's current one (it moves on a rekey) and the
        earlier ones the Primary's sealed past gives (so chunks from before a rotation stay readable)."""
        m = self.session.membership
        if self._ring is None:
            self._ring = Keyring(m.network_id, m.secret_generation, m.secret)
        elif m.secret_generation > self._ring.generation:
            self._ring.advance(m.secret_generation, m.secret)
        head = self.session.ledger.head
        blob = head.params.get(PAST_PARAM) if head is not None else None
        if blob and blob != self._learned and secret_generation(head) in self._ring.generations():
            self._learned = blob
            try:
                self._ring.learn(blob, secret_generation(head))
            except KeyringError as exc:
                log.error("storage.past_secrets_unusable", error=str(exc),
                          hint="chunks written before the last rotation may be unreadable here")
        return self._ring

    def devices(self) -> list[str]:
        head = self.session.ledger.head
        if head is None:
            return []
        alive = liveness(head)
        return sorted(n for n, m in head.members.items() if m.role in STORAGE_ROLES and alive.get(n, False))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.node.serve()
        task_status.started()
        await self.repairer.run()

    async def put(self, volume: str, name: str, data: bytes | Path) -> dict:
        """Put bytes, or a file read chunk by chunk (never held whole in memory)."""
        t0 = trio.current_time()
        await self.roots.ensure_writer(volume)
        t1 = trio.current_time()
        entry = await (self.node.put_path(volume, name, data) if isinstance(data, Path)
                       else self.node.put_file(volume, name, data))
        t2 = trio.current_time()
        log.info("storage put", volume=volume, name=entry.path, size=entry.size, lease_s=round(t1 - t0, 3),
                 data_and_commit_s=round(t2 - t1, 3), commit_s=round(self.node.last_commit_s, 3))
        return {"volume": volume, "name": entry.path, "version": entry.version, "size": entry.size,
                "chunks": len(entry.chunks), "k": entry.chunks[0].k, "n": entry.chunks[0].n,
                "seconds": {"lease": round(t1 - t0, 3), "data": round(t2 - t1 - self.node.last_commit_s, 3),
                            "commit": round(self.node.last_commit_s, 3)}}

    async def remove(self, volume: str, name: str) -> None:
        await self.roots.ensure_writer(volume)
        await self.node.remove_file(volume, name)

    def status(self) -> dict:
        rep = self.repairer.status()
        head = self.session.ledger.head
        vols = head.params.get(VOLUMES, {}) if head else {}
        out = {}
        for name in sorted(vols):
            v = vols[name]
            root = VolumeRoot.from_wire(v["root"]) if v.get("root") else None
            out[name] = {
                "lease": v.get("lease") or None,
                "lease_until_s": v.get("lease_until_s", 0),
                "seq": root.seq if root else 0,
                **rep["volumes"].get(name, {}),
            }
        from mycelium.storage.mount import fuse_unavailable

        return {"devices": self.devices(), "volumes": out, "repair": {k: rep[k] for k in ("total", "decisions", "scrub", "rounds",
                "devices_up", "devices_silent", "gc")}, "store": {"shares": len(self.node.store.ids()),
                "used_bytes": self.node.store.used_bytes, "corrupt_found": self.node.store.corrupt_found},
                "key_generations": self.keyring().generations(),
                "fuse": fuse_unavailable() or "available"}


async def start_storage(session: Any, mesh: Any, nursery: trio.Nursery) -> None:
    """Start the store in `session` (sets session.storage), or record why it cannot run."""
    session.storage = None
    if not hasattr(mesh, "open_channel") or not hasattr(mesh, "serve_channels"):
        session.storage_unavailable = "this build's mesh has no data channel, so the distributed store is off"
        return
    session.storage_unavailable = None
    sc = session.cfg.storage
    session.storage = svc = StorageService(
        session,
        mesh,
        cfg=StorageConfig(ack_extra=sc.ack_extra),
        repair=RepairConfig(fresh_s=3.0 * sc.inventory_interval_s, grace_s=float(sc.grace_s),
                            bandwidth_bytes_per_s=sc.repair_mib_per_s << 20,
                            burst_bytes=max(2 * sc.repair_mib_per_s, 8) << 20),
        loop=LoopConfig(inventory_interval_s=float(sc.inventory_interval_s), scrub_bytes_per_s=sc.scrub_mib_per_s << 20,
                        scrub_pause_s=float(sc.scrub_pause_s)),
        gc=GcConfig(grace_s=float(sc.gc_grace_s)),
    )
    await nursery.start(svc.run)
