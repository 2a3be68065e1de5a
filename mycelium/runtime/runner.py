"""Runs on this node what the Primary places on it (Endomycetes on the embedded process runtime),
and publishes what runs here in the service spores.

Interface used by the network session and the control API (see mycelium/api/routes.py):
    WorkloadRunner(session)               built per network session
    await nursery.start(runner.run)       reconcile until cancelled; stop everything on the way out
    runner.services() -> list[dict]       rows for `mycelium services --json` (see reports.ServiceView.row)
    await runner.logs(name, lines)        recent output lines of this node's replica
    runner.resolve(name) -> list[str]     endpoints ("host:port") where the service answers

Every `poll_s` the runner compares the Primary's placement for this node with the driver's instances
(mycelium.runtime.reconciler: stop, restart, start), retries starts that fail (a fixed port in use, …)
with the service's own backoff, and publishes one SERVICE entry per replica (health, endpoints) through
the Latent exchange when it changed, and every `refresh_s` anyway so readers can tell stale reports.
The process driver is opened on `<state_dir>/workloads` for the session's lifetime: opening it kills
leftovers of a crashed daemon, and closing it (cancellation: `mycelium down`, a network switch) stops
every instance — SIGTERM, then SIGKILL after the grace — even though the caller is being cancelled.

On a node whose runtime is k3s (session.k3s, mycelium.runtime.k3s.handoff) the runner runs only its
share of the placed replicas (mycelium.runtime.k3s.handover.who_manages): a replica whose pod on this
node is ready is K3s's — its process replica is stopped then, not before — and its service-spore
report and logs come from the pod through the Kubernetes API, so `services`, `resolve` and `logs`
read the same on both runtimes. When K3s stops being ready, everything is the runner's again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from mycelium.observability.logs import get_logger
from mycelium.runtime.driver import INSTANCE_ID, DriverError, InstanceHandle, InstanceSpec, InstanceStatus, UnknownInstance
from mycelium.runtime.k3s.handover import Decision, Owner, pod_health, process_share, who_manages
from mycelium.runtime.k3s.pods import PodReadError
from mycelium.runtime.process import ProcessDriver, ProcessDriverConfig
from mycelium.storage.workload_mounts import WorkloadVolumes
from mycelium.runtime.reconciler import ObservedInstance, Restart, Start, Stop, desired_here, reconcile
from mycelium.runtime.spec import ServiceSpec, SpecError
from mycelium.spores.entry import EntryType
from mycelium.runtime.reports import (
    ReplicaHealth, ReplicaReport, ServiceView, endpoints, reachable_host, replica_health, service_views,
)

log = get_logger("mycelium.workloads")

class WorkloadError(Exception):
    """A workload request this node cannot serve; the message says why."""


class NoSuchReplica(WorkloadError):
    """No replica of that service can be on this node (no runtime running, or not a service name)."""


class ReplicaElsewhere(WorkloadError):
    """The service's replicas are placed on other nodes; this one holds no logs of it."""


MAX_LOG_LINES = 10_000  # `mycelium logs -n` is capped here: the answer travels in one API response


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    poll_s: float = 0.5  # Primary vs. instances comparison period; lower = faster reaction, more CPU
    refresh_s: float = 10.0  # an unchanged replica report is re-signed this often (proof of life)
    # a gossiped report older than this shows as "stale" (its endpoints stop resolving): 3 × refresh_s
    # tolerates two lost refreshes, plus 10 s for clocks that disagree. Lower = a stopped node's
    # endpoints vanish sooner; too low and a node whose clock lags looks stale.
    stale_after_s: float = 40.0
    stop_grace_s: float = 10.0  # SIGTERM→SIGKILL grace for a replica that stops (undeploy, moved, shutdown)


@dataclass(slots=True)
class FailedStart:
    attempts: int
    retry_at: float  # trio clock
    message: str


class StartBackoff:
    """Starts that the driver refused (port in use, unwritable directory…): retried after the
    service's own restart backoff, min(max, initial × factor^(attempts − 1)). Pure bookkeeping."""

    def __init__(self) -> None:
        self.failures: dict[str, FailedStart] = {}

    def ready(self, instance_id: str, now: float) -> bool:
        failed = self.failures.get(instance_id)
        return failed is None or now >= failed.retry_at

    def failed(self, instance_id: str, spec: ServiceSpec, now: float, message: str) -> FailedStart:
        attempts = self.failures[instance_id].attempts + 1 if instance_id in self.failures else 1
        delay_s = spec.restart.backoff_ms(attempts) / 1000
        self.failures[instance_id] = entry = FailedStart(attempts, now + delay_s, message)
        return entry

    def succeeded(self, instance_id: str) -> None:
        self.failures.pop(instance_id, None)

    def keep_only(self, instance_ids: set[str]) -> None:
        for iid in set(self.failures) - instance_ids:
            del self.failures[iid]


class WorkloadRunner:
    def __init__(self, session: Any, config: WorkloadConfig = WorkloadConfig()) -> None:
        self._draining = False  # set by drain(): converge no more, everything here is stopped
        self.session = session
        self.config = config
        self.driver: ProcessDriver | None = None
        self.starts = StartBackoff()
        self._specs: dict[str, tuple[Any, ServiceSpec | None]] = {}  # name -> (wire form, spec or None if bad)
        self._local: dict[str, ReplicaReport] = {}  # this node's replicas, refreshed every poll
        self._published: dict[str, tuple[dict, float]] = {}  # service -> (body, trio time published)
        self._owners: dict[str, Decision] = {}  # who runs each replica placed here (K3s nodes only)

    # ------------------------------------------------------------------------------ running
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        state_dir = self.session.cfg.state_dir / "workloads"
        config = ProcessDriverConfig(stop_grace_s=self.config.stop_grace_s)
        async with ProcessDriver.open(state_dir, config) as driver:
            for message in driver.reaped:
                log.warning("killed a leftover of a previous daemon", detail=message)
            self.driver = driver
            driver.volumes = WorkloadVolumes(self.session, self.session.cfg.state_dir / "volumes")
            task_status.started()
            try:
                while True:
                    if not self._draining:
                        await self.converge()
                    self.publish()
                    await trio.sleep(self.config.poll_s)
            finally:
                self.driver = None
                if self._local:
                    log.info("stopping every replica on this node", services=sorted(self._local))
                self._local = {}

    async def drain(self) -> None:
        """Clean shutdown: stop every replica here and report them stopped while gossip still runs,
        so other nodes stop resolving this node's endpoints at once."""
        if self.driver is None:
            return
        self._draining = True
        async with trio.open_nursery() as nursery:
            for handle in await self.driver.instances():
                nursery.start_soon(self._stop, handle.instance_id, "node shutting down")
        self._local = {}
        self.publish(stopped_message="the node is shutting down")

    async def converge(self) -> None:
        """One pass: make the driver's instances match what the Primary places here."""
        driver = self.driver
        assert driver is not None
        me = self.session.key.node_id
        head = self.session.ledger.head
        specs = self._current_specs(head)
        placements = head.placements if head is not None else {}
        placed = desired_here(specs, placements, me)
        observed = {iid: ObservedInstance(iid, st.version, st.state, st.final)
                    for iid, st in (await self._statuses()).items()}
        self._owners = owners = self._ownership(placed, set(observed))
        desired = process_share(owners, placed) if owners else placed
        views = self._views(specs, placements)
        actions = reconcile(me, desired, observed, {name: v.replica_views() for name, v in views.items()})
        stops = [a for a in actions if isinstance(a, Stop)]
        if stops:
            async with trio.open_nursery() as nursery:
                for action in stops:
                    handed = owners.get(action.instance_id)
                    reason = f"handed over to K3s: {handed.reason}" if handed and handed.owner is Owner.K3S else action.reason
                    nursery.start_soon(self._stop, action.instance_id, reason)
        for action in actions:
            if isinstance(action, Restart):
                await self._stop(action.instance_id, action.reason)
                await self._start(action.instance_id, action.spec)
            elif isinstance(action, Start):
                await self._start(action.instance_id, action.spec)
        self.starts.keep_only(set(desired))
        self._local = self._reports(desired, await self._statuses())
        self._local.update(self._pod_reports(placed, owners))

    def _ownership(self, placed: dict[str, ServiceSpec], process: set[str]) -> dict[str, Decision]:
        """Who runs each placed replica (k3s/handover.py); {} on a node without K3s enabled."""
        k3s = getattr(self.session, "k3s", None)
        if k3s is None:
            return {}
        return who_manages(k3s.runtime_k3s(), placed, process, k3s.pods)

    def _pod_reports(self, placed: dict[str, ServiceSpec], owners: dict[str, Decision]) -> dict[str, ReplicaReport]:
        """Service-spore reports of the replicas K3s runs here, from their pods."""
        k3s = getattr(self.session, "k3s", None)
        out, now_ms = {}, int(time.time() * 1000)
        for name, decision in owners.items():
            if decision.owner is not Owner.K3S:
                continue
            pod = k3s.pods.get(name) if k3s is not None else None
            if pod is None:
                out[name] = ReplicaReport(self.session.key.node_id, name, ReplicaHealth.PENDING, timestamp_ms=now_ms,
                                          message="on K3s: waiting for its pod")
                continue
            health = ReplicaHealth(pod_health(pod, placed[name].health is not None))
            out[name] = ReplicaReport(self.session.key.node_id, name, health, pod.endpoints, pod.restarts, pod.version,
                                      f"on K3s: pod {pod.name}" + (f" ({pod.message})" if pod.message else ""), now_ms)
        return out

    async def _statuses(self) -> dict[str, InstanceStatus]:
        out = {}
        for handle in await self.driver.instances():
            try:
                out[handle.instance_id] = await self.driver.status(handle)
            except UnknownInstance:
                continue  # stopped between the two calls
        return out

    async def _stop(self, instance_id: str, reason: str) -> None:
        try:
            final = await self.driver.stop(InstanceHandle(self.driver.name, instance_id), self.config.stop_grace_s)
        except UnknownInstance:
            return  # already gone
        log.info("stopped replica", service=instance_id, reason=reason, exit_code=final.exit_code)

    async def _start(self, instance_id: str, spec: ServiceSpec) -> None:
        now = trio.current_time()
        if not self.starts.ready(instance_id, now):
            return
        try:
            await self.driver.start(InstanceSpec(instance_id, spec))
        except DriverError as exc:
            failed = self.starts.failed(instance_id, spec, now, str(exc))
            log.warning("cannot start replica", service=instance_id, attempts=failed.attempts,
                        retry_in_s=round(failed.retry_at - now, 1), error=str(exc))
            return
        self.starts.succeeded(instance_id)
        log.info("started replica", service=instance_id, version=spec.version())

    def _current_specs(self, head: Any) -> dict[str, ServiceSpec]:
        """The Primary's services as specs (parsed once per change of their wire form)."""
        if head is None:
            self._specs.clear()
            return {}
        out = {}
        for name, wire in head.services.items():
            cached = self._specs.get(name)
            if cached is None or cached[0] != wire:
                try:
                    cached = (wire, ServiceSpec.from_wire(wire))
                except SpecError as exc:  # consensus validated it; a newer wire version we cannot read
                    log.error("cannot read a deployed service spec; not running it", service=name, error=str(exc))
                    cached = (wire, None)
                self._specs[name] = cached
            if cached[1] is not None:
                out[name] = cached[1]
        for name in set(self._specs) - set(head.services):
            del self._specs[name]
        return out

    def _reports(self, desired: dict[str, ServiceSpec], statuses: dict[str, InstanceStatus]) -> dict[str, ReplicaReport]:
        me = self.session.key.node_id
        mesh = getattr(self.session, "mesh", None)
        host = reachable_host(mesh.own_addresses() if mesh is not None else [])
        now_ms, now = int(time.time() * 1000), trio.current_time()
        reports = {}
        for name in desired:
            status = statuses.get(name)
            failed = self.starts.failures.get(name)
            if status is not None:
                reports[name] = ReplicaReport(me, name, replica_health(status.state), endpoints(host, status.ports),
                                              status.restarts, status.version, status.message, now_ms)
            elif failed is not None:
                retry_s = max(0.0, failed.retry_at - now)
                reports[name] = ReplicaReport(
                    me, name, ReplicaHealth.FAILED, timestamp_ms=now_ms,
                    message=f"{failed.message} (attempt {failed.attempts}; next try in {retry_s:.0f} s)")
            else:
                reports[name] = ReplicaReport(me, name, ReplicaHealth.PENDING, timestamp_ms=now_ms)
        return reports

    # ------------------------------------------------------------------------------ service spores
    def publish(self, *, stopped_message: str = "no longer placed on this node") -> None:
        """Sign and gossip this node's replica reports that changed (or are due for a refresh); a
        replica that no longer runs here is reported once as stopped."""
        latent = getattr(self.session, "latent", None)
        if latent is None:
            return
        now = trio.current_time()
        for name, report in self._local.items():
            body = report.to_body()
            last = self._published.get(name)
            if last is None or last[0] != body or now - last[1] >= self.config.refresh_s:
                if latent.publish_service_entry(name, body):
                    self._published[name] = (body, now)
        for name in set(self._published) - set(self._local):
            stopped = ReplicaReport(self.session.key.node_id, name, ReplicaHealth.STOPPED,
                                    message=stopped_message).to_body()
            latent.publish_service_entry(name, stopped)
            del self._published[name]

    def _gossiped(self) -> list[ReplicaReport]:
        latent = getattr(self.session, "latent", None)
        out = []
        for entry in latent.entries() if latent is not None else ():
            if entry.type == EntryType.SERVICE:
                report = ReplicaReport.from_body(entry.author, entry.name, entry.body, entry.timestamp_ms)
                if report is not None:
                    out.append(report)
        return out

    def _views(self, specs: dict[str, ServiceSpec], placements: Any) -> dict[str, ServiceView]:
        return service_views(specs, placements, self._gossiped(), now_ms=int(time.time() * 1000),
                             stale_after_ms=int(self.config.stale_after_s * 1000), local=self._local)

    # ------------------------------------------------------------------------------ views for the API
    def services(self) -> list[dict]:
        head = self.session.ledger.head
        if head is None:
            return []
        now_ms = int(time.time() * 1000)
        views = self._views(self._current_specs(head), head.placements)
        return [view.row(now_ms) for _, view in sorted(views.items())]

    def handover(self) -> dict[str, int]:
        """How this node's placed replicas are split between the runtimes (`mycelium status`)."""
        on_k3s = sum(1 for d in self._owners.values() if d.owner is Owner.K3S)
        return {"k3s": on_k3s, "process": len(self._owners) - on_k3s,
                "handing_over": sum(1 for d in self._owners.values() if d.handing_over)}

    def resolve(self, name: str) -> list[str]:
        head = self.session.ledger.head
        if head is None or name not in head.services:
            return []
        view = self._views(self._current_specs(head), head.placements).get(name)
        return view.endpoints() if view is not None else []

    async def logs(self, name: str, lines: int) -> list[str]:
        owner = self._owners.get(name)
        k3s = getattr(self.session, "k3s", None)
        if owner is not None and owner.owner is Owner.K3S and k3s is not None:
            pod = k3s.pods.get(name)
            if pod is None:
                raise NoSuchReplica(f"{name!r} runs on K3s here, but its pod is not there yet; try again in a moment")
            try:
                return await k3s.pod_logs(pod, max(0, min(lines, MAX_LOG_LINES)))
            except PodReadError as exc:
                raise NoSuchReplica(f"{name!r} runs on K3s here, but the logs of its pod {pod.name} cannot be "
                                    f"read: {exc}") from None
        driver = self.driver
        head = self.session.ledger.head
        placed = list(head.placements.get(name, ())) if head is not None else []
        if driver is None or not INSTANCE_ID.fullmatch(name):
            raise NoSuchReplica(f"no replica of {name!r} on this node")
        tail: deque[str] = deque(maxlen=max(0, min(lines, MAX_LOG_LINES)))
        try:
            async for line in driver.logs(InstanceHandle(driver.name, name)):
                tail.append(line.decode(errors="replace"))
        except UnknownInstance:
            where = ", ".join(n[-8:] for n in placed) or "no node"
            raise ReplicaElsewhere(f"this node runs no replica of {name!r} and has no logs of it; "
                                   f"it is placed on {where}") from None
        return list(tail)
