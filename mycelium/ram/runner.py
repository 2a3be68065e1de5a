"""What this node does for the Endophyte leases in the Primary (trio shell).

Every `poll_s` it compares the leases (`params["endophytes"]`, decided by the ledger: ram/leases.py)
with what runs here:
- the lease names this node primary → run the program (its arena filled from this node's backup copy
  when the lease resumes an epoch) and replicate it to the lease's backups over the data channel;
- it no longer does (failover elsewhere, handover, undeploy) → kill it;
- this node is a backup → keep the copy (BackupStore) and report its committed epoch to the ledger,
  which failover needs; the primary reports the epoch it cut, so the loss can be told;
- a planned migration names a target → converge, freeze, final epoch, wait for the target's ack, then
  submit the handover; the target starts once the ledger applied it (so two never run at once).
Both kinds: a process (process.ArenaProcess) or a QEMU guest (vm.GuestVM, built by vm_runner.py);
they cut epochs, pause and hold alike, so everything below is kind-blind.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mycelium.observability.logs import structlog
from mycelium.ram.epochs import FULL
from mycelium.ram.process import ArenaProcess, ProcessEndophyteError
from mycelium.ram.replicate import BackupStore, PrimaryReplicator
from mycelium.ram.vm import GuestVM, VmEndophyteError

log = structlog.get_logger("mycelium.ram")
DEFAULT_ARENA_BYTES = 1 << 20
MAX_ARENA_BYTES = 256 << 20
VM_INTERVAL_S = 1.0   # a VM epoch also saves QEMU's device state (~0.1 s stopped): one a second


@dataclass(slots=True)
class _Running:
    name: str
    generation: int
    backups: tuple[str, ...]
    process: ArenaProcess | GuestVM
    replicator: PrimaryReplicator
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    migration: str = ""          # phase of a planned migration run from here
    frozen_at: float | None = None


class EndophyteRunner:
    def __init__(self, session: Any, *, poll_s: float = 0.5, report_s: float = 1.0, interval_s: float = 0.1) -> None:
        self.session = session
        self.poll_s, self.report_s, self.interval_s = poll_s, report_s, interval_s
        self.store = BackupStore()
        self.running: dict[str, _Running] = {}
        self.notes: dict[str, str] = {}
        self.latency: dict[str, str] = {}  # per Endophyte: the latency profile its buffers were sized by
        self._reported: dict[str, tuple[int, int]] = {}
        self._last_report = 0.0
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ loop
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        mesh = self.session.mesh
        if not hasattr(mesh, "open_channel"):
            task_status.started()
            return  # an in-memory test transport without data channels: nothing to replicate over
        for found in await reap_leftovers(Path(self.session.cfg.state_dir)):
            log.warning("endophyte leftover killed", what=found)
        self.store.serve(mesh)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await self.converge()
                    if trio.current_time() - self._last_report >= self.report_s:
                        self._last_report = trio.current_time()
                        await self.report()
                    await trio.sleep(self.poll_s)
            finally:
                for r in list(self.running.values()):
                    r.scope.cancel()
                    r.process.kill()
                self.running.clear()

    def leases(self) -> dict[str, dict]:
        head = self.session.ledger.head
        return dict(head.params.get("endophytes", {})) if head is not None else {}

    async def converge(self) -> None:
        me = self.session.key.node_id
        leases = self.leases()
        for table in (self.notes, self.latency):  # bounded by the leases: an undeployed name leaves them
            for gone in [name for name in table if name not in leases]:
                del table[gone]
        prune_undeployed(Path(self.session.cfg.state_dir) / "endophytes", set(leases) | set(self.running))
        for name, r in list(self.running.items()):
            rec = leases.get(name)
            if rec is None or rec["primary"] != me or rec["generation"] != r.generation:
                log.info("endophyte no longer primary here: stopping", name=name)
                r.scope.cancel()
                await trio.to_thread.run_sync(r.process.kill)
                del self.running[name]
            elif tuple(rec["backups"]) != r.backups and not r.migration:
                self._restart_replicator(r, rec)
        for name, rec in sorted(leases.items()):
            if rec["primary"] == me and name not in self.running:
                await self._start(name, rec)
            r = self.running.get(name)
            if r is not None and rec.get("migrating_to") and not r.migration:
                r.migration = "converging"
                assert self._nursery is not None
                self._nursery.start_soon(self._migrate, r, rec["migrating_to"])

    async def _start(self, name: str, rec: dict) -> None:
        spec = rec["spec"]
        image, resumed = None, FULL
        if rec["resumed_epoch"] != FULL:
            held = self.store.images.get(name)
            # reports lag the copies: a backup may hold a newer whole epoch than the ledger knew; never older
            if held is None or held.committed_epoch < rec["resumed_epoch"]:
                have = held.committed_epoch if held else "nothing"
                self.notes[name] = f"lease resumes epoch {rec['resumed_epoch']} but this node holds {have}"
                return
            image, resumed = dict(held.image), held.committed_epoch
        workdir = Path(self.session.cfg.state_dir) / "endophytes" / name / f"g{rec['generation']}"
        prune_workdirs(workdir.parent, keep_from=rec["generation"] - KEEP_GENERATIONS + 1)
        try:
            if "vm" in spec:
                from mycelium.ram.vm_runner import guest_vm

                process = await trio.to_thread.run_sync(guest_vm, name, spec["vm"], workdir)
            else:
                process = self._arena_process(name, spec, workdir)
            await trio.to_thread.run_sync(lambda: process.start(image=image))
        except (ProcessEndophyteError, VmEndophyteError, OSError) as exc:
            self.notes[name] = f"could not start: {exc}"
            process.kill()
            return
        _record_run(workdir, name, process)
        first = resumed + 1 if resumed != FULL else 0
        rep = self._replicator(name, rec, process, first)
        r = _Running(name, rec["generation"], tuple(rec["backups"]), process, rep)
        self.running[name] = r
        self.notes.pop(name, None)
        log.info("endophyte started", name=name, generation=rec["generation"], resumed_epoch=resumed)
        self._spawn(r)

    @staticmethod
    def _arena_process(name: str, spec: dict, workdir: Path) -> ArenaProcess:
        proc_spec = spec["process"]
        command = proc_spec["command"]
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        argv += list(proc_spec.get("args", []))
        arena = int((spec.get("resources") or {}).get("memory", DEFAULT_ARENA_BYTES))
        arena = min(MAX_ARENA_BYTES, max(4096, arena - arena % 4096))
        return ArenaProcess(name, argv, arena, workdir, env=dict(proc_spec.get("env", {})))

    def _replicator(self, name: str, rec: dict, process: ArenaProcess | GuestVM, first_epoch: int) -> PrimaryReplicator:
        from mycelium.ram.buffers import sizes_for_backups
        from mycelium.ram.epochs import PrimaryConfig
        from mycelium.ram.throttle import Throttle

        rtts = {p.node_id: p.latency_ms for p in self.session.mesh.peers()} if hasattr(self.session.mesh, "peers") else {}
        sizes, self.latency[name] = sizes_for_backups(rec["spec"].get("latency"), [rtts.get(b) for b in rec["backups"]])
        config = PrimaryConfig(window_bytes=sizes.window_bytes, backlog_limit_bytes=sizes.backlog_limit_bytes,
                               emergency=(rec["spec"].get("emergency") or {}).get("mode", "pause"))
        return PrimaryReplicator(name, rec["generation"], self.session.mesh, list(rec["backups"]), process.cut,
                                 config=config,
                                 throttle=Throttle.from_manifest(rec["spec"].get("throttle")),
                                 pause=process.pause, resume=process.resume, first_epoch=first_epoch,
                                 interval_s=VM_INTERVAL_S if isinstance(process, GuestVM) else self.interval_s)

    def _spawn(self, r: _Running) -> None:
        async def guarded() -> None:
            with r.scope:
                try:
                    await r.replicator.run()
                except (ProcessEndophyteError, VmEndophyteError) as exc:
                    self.notes[r.name] = f"the program died: {exc}; {r.process.stderr_tail(200)}"
                    return
                # run() returns only when a backup answered with a newer generation: another node holds
                # the lease (we were partitioned away and failed over). Stop at once: never two primaries.
                self.notes[r.name] = "fenced: a newer lease generation exists; stopped here"
                await trio.to_thread.run_sync(r.process.kill)
        assert self._nursery is not None
        self._nursery.start_soon(guarded)

    def _restart_replicator(self, r: _Running, rec: dict) -> None:
        r.scope.cancel()
        r.scope = trio.CancelScope()
        r.backups = tuple(rec["backups"])
        r.replicator = self._replicator(r.name, rec, r.process, r.replicator.core.next_epoch)
        self._spawn(r)

    # ------------------------------------------------------------------ migration
    async def _migrate(self, r: _Running, target: str, downtime_limit_s: float = 0.3) -> None:
        rep = r.replicator
        while True:
            if target not in rep.core.cursors:
                r.migration = f"failed: {target[-8:]} is not a backup"
                return
            lag = rep.core.lag(target, trio.current_time()).bytes
            if lag / max(rep.figures.throughput_Bps, 1.0) <= downtime_limit_s and rep.core.cursors[target].acked >= 0:
                break
            await trio.sleep(0.02)
        r.migration = "stopped"
        r.frozen_at = time.time()
        await trio.to_thread.run_sync(r.process.hold)
        rep.cutting = False
        final = await rep.cut_now()
        with trio.move_on_after(30):
            while rep.core.cursors.get(target) is None or rep.core.cursors[target].acked < final:
                await trio.sleep(0.01)
        if rep.core.cursors.get(target) is None or rep.core.cursors[target].acked < final:
            r.migration = "aborted: the target did not acknowledge the final epoch"
            rep.cutting = True
            await trio.to_thread.run_sync(r.process.release)
            return
        r.migration = f"handing over epoch {final}"
        await self._submit({"action": "handover", "name": r.name, "generation": r.generation, "epoch": final})
        log.info("endophyte handover submitted", name=r.name, epoch=final, target=target)
        # from here the source never runs again: the ledger's new lease stops it (converge)

    # ------------------------------------------------------------------ reports
    async def report(self) -> None:
        me = self.session.key.node_id
        for name, rec in self.leases().items():
            if me in rec["backups"]:
                held = self.store.images.get(name)
                if held is None or held.committed_generation != rec["generation"]:
                    continue
                figure = (rec["generation"], held.committed_epoch)
            elif name in self.running and rec["primary"] == me:
                figure = (rec["generation"], self.running[name].replicator.core.next_epoch - 1)
            else:
                continue
            if figure[1] >= 0 and self._reported.get(name) != figure:
                self._reported[name] = figure
                await self._submit({"action": "report", "name": name, "generation": figure[0], "epoch": figure[1]})

    async def _submit(self, body: dict) -> None:
        from mycelium.ledger.operations import endophyte_operation

        op = endophyte_operation(self.session.key, self.session.membership.network_id, body, now_s=int(time.time()))
        await self.session.submit(op)

    # ------------------------------------------------------------------ view
    def rows(self) -> list[dict]:
        now = trio.current_time()
        out = []
        for name, rec in sorted(self.leases().items()):
            row = {"name": name, "kind": "Endophyte", "workload": "vm" if "vm" in rec["spec"] else "process",
                   "generation": rec["generation"], "primary": rec["primary"], "backups": rec["backups"],
                   "resumed_epoch": rec["resumed_epoch"], "lost_epochs": rec.get("lost_epochs", 0),
                   "reports": {n: e for n, (g, e) in rec["reports"].items()},
                   "migrating_to": rec.get("migrating_to"), "note": self.notes.get(name, "")}
            r = self.running.get(name)
            if r is not None:
                row["local"] = {**r.replicator.status(now), "migration": r.migration,
                                "latency": self.latency.get(name, "lan")}
                if isinstance(r.process, GuestVM):
                    row["local"]["vm"] = {"probe_port": r.process.probe_port, "workdir": str(r.process.workdir)}
            out.append(row)
        return out


# ---------------------------------------------------------------------- workdirs on disk
# One workdir per generation this node ran (logs, the QEMU's console and files): a new one with every
# migration or failover here. Only the newest KEEP_GENERATIONS of a name stay, and an undeployed
# name's go, so the state dir does not grow with the Endophytes' history.
KEEP_GENERATIONS = 2


def prune_workdirs(name_dir: Path, *, keep_from: int) -> list[Path]:
    """Remove `name_dir/g<N>` for N < keep_from; the removed paths."""
    import shutil

    removed = []
    for path in name_dir.glob("g*") if name_dir.is_dir() else []:
        if path.is_dir() and path.name[1:].isdigit() and int(path.name[1:]) < keep_from:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prune_undeployed(root: Path, names: set[str]) -> list[Path]:
    """Remove the workdirs of every name under `root` not in `names` (leased or running here)."""
    import shutil

    removed = []
    for path in root.iterdir() if root.is_dir() else []:
        if path.is_dir() and path.name not in names:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------- leftovers of a crashed daemon
# A QEMU or arena process runs in its own session, so a daemon killed with -9 leaves it running (and
# holding its ports and memory) while the restarted daemon starts the same Endophyte again. Each start
# records the process group in its workdir (runtime/leftovers.py's run record); the runner's start
# kills what is left of every recorded group, as the process driver does for its instances.

def _record_run(workdir: Path, name: str, process: ArenaProcess | GuestVM) -> None:
    from mycelium.runtime import leftovers  # a sibling's leaf module (psutil, trio): the same record format

    proc = process.proc if isinstance(process, ArenaProcess) else (process.vm.proc if process.vm else None)
    if proc is None:
        return
    started = leftovers.start_time(proc.pid)
    if started is not None:
        leftovers.write_record(workdir, leftovers.RunRecord(name, proc.pid, proc.pid, started))


async def reap_leftovers(state_dir: Path, grace_s: float = 2.0) -> list[str]:
    """Kill the leftovers of every recorded Endophyte process under `state_dir`; what was found."""
    from mycelium.runtime import leftovers

    found: list[str] = []
    root = state_dir / "endophytes"
    for endophyte_dir in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        records, bad = leftovers.read_records(endophyte_dir)  # <name>/g<generation>/run.json
        found.extend(bad)
        for workdir, record in records:
            message = await leftovers.reap(record, grace_s)
            if message:
                found.append(message)
            leftovers.remove_record(workdir)
    return found
