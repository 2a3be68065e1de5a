"""The K3s handoff on one node: overlay, K3s process, manager manifest — kept in line with the
newest Primary. The trio shell that composes the pure pieces (overlay.addressing/peers, plan,
config) with their shells (overlay.wireguard, supervisor). Owned by the network session when
`[k3s] enabled = true`.

Every `SYNC_INTERVAL_S` (membership changes reach WireGuard within that): plan the cluster from the
Primary and its liveness; if this node runs K3s, bring its WireGuard interface up once and apply
the desired peer set (Latent OVERLAY entries); render and install K3s's config, write the token,
let the supervisor (re)start K3s; on a ready server, write the manager's manifest into K3s's
auto-deploy directory. Anything that fails leaves the node on the process runtime with the reason.

While the runtime is k3s (`runtime_k3s()`: server ready with the manager's manifest installed, or
agent joined) it reads this node's service pods every `POD_POLL_S` (pods.PodReader) for the process
runner, which hands its replicas over to them (handover.who_manages) and reads their logs here.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import trio

from mycelium import __version__
from mycelium.ledger.operations import liveness
from mycelium.observability.logs import get_logger
from mycelium.overlay.addressing import OverlayConfig
from mycelium.overlay.keys import OverlayKey
from mycelium.overlay.peers import Announcement, desired_overlay
from mycelium.overlay.wireguard import OverlayError, WireGuardLink
from mycelium.runtime.k3s.config import NodeFiles, NodePaths, TemplateMissing, k8s_node_name
from mycelium.runtime.k3s.handover import PodView
from mycelium.runtime.k3s.pods import PodReader, PodReadError
from mycelium.runtime.k3s.manager.deploy import MANAGER_IMAGE, install_manager
from mycelium.runtime.k3s.plan import K3sMode, plan_cluster
from mycelium.runtime.k3s.supervision import SupervisorConfig
from mycelium.runtime.k3s.supervisor import K3sSupervisor, RuntimeReport
from mycelium.runtime.k3s.token import cluster_token
from mycelium.spores.entry import EntryType

log = get_logger("mycelium.k3s")
SYNC_INTERVAL_S = 2.0
POD_POLL_S = 1.0  # how often this node's pods are read while the runtime is k3s (the handover's pace)


class K3sHandoff:
    def __init__(self, session: Any, section: Any, overlay: OverlayConfig = OverlayConfig()) -> None:
        self.session = session
        self.section = section
        self.overlay = overlay
        state_dir = session.cfg.state_dir
        self.paths = NodePaths(state_dir / "k3s")
        self.key = OverlayKey.load_or_create(state_dir)
        self.supervisor = K3sSupervisor(self.paths, section.binary or None,
                                        SupervisorConfig(ready_timeout_s=float(section.ready_timeout_s)))
        self.link: WireGuardLink | None = None
        self.interface = getattr(section, "overlay_interface", "") or overlay.interface
        self.overlay_error = ""
        self.manager_image = section.manager_image or f"{MANAGER_IMAGE}:{__version__}"
        self.manager_installed = False  # the manager's manifest is in K3s's auto-deploy directory
        self.pods: dict[str, PodView] = {}  # this node's service pods, while the runtime is k3s
        self.pods_error = ""
        self._reader: PodReader | None = None

    # ------------------------------------------------------------------------------ for others
    def announcement_body(self) -> dict:
        """This node's OVERLAY Latent entry: its WireGuard public key and endpoint."""
        return Announcement(self.key.public, self._endpoint()).to_body()

    def _endpoint(self) -> str:
        mesh = self.session.mesh
        for addr in (mesh.own_addresses() if mesh is not None else []):
            parts = addr.split("/")
            if len(parts) > 2 and parts[1] == "ip4" and not ipaddress.ip_address(parts[2]).is_loopback:
                return f"{parts[2]}:{self.overlay.listen_port}"
        return ""

    def report(self) -> RuntimeReport:
        report = self.supervisor.report()
        if self.overlay_error and report.runtime == "process":
            return RuntimeReport("process", f"overlay: {self.overlay_error}", report.mode, report.state,
                                 report.restarts, report.pid, report.cluster)
        return report

    def runtime_k3s(self) -> bool:
        """K3s runs this node's Endomycetes: a ready server whose manager is deployed, or a joined agent."""
        report = self.supervisor.report()
        return report.runtime == "k3s" and (report.mode == "agent" or self.manager_installed)

    async def pod_logs(self, pod: PodView, lines: int) -> list[str]:
        reader = self._reader
        if reader is None:
            raise PodReadError("K3s is not this node's runtime any more")
        return await trio.to_thread.run_sync(reader.logs, pod, lines)

    async def _watch_pods(self) -> None:
        me = self.session.key.node_id
        while True:
            if self.runtime_k3s():
                mode = self.supervisor.report().mode
                kubeconfig = self.paths.kubeconfig if mode == "server" else self.paths.agent_kubeconfig
                if self._reader is None or self._reader.kubeconfig != kubeconfig:
                    self._reader = PodReader(kubeconfig, k8s_node_name(me))
                try:
                    self.pods, self.pods_error = await trio.to_thread.run_sync(self._reader.pods), ""
                except PodReadError as exc:  # no pods known: the runner keeps (or takes back) the replicas
                    if self.pods_error != str(exc):
                        log.warning("cannot read this node's pods", error=str(exc))
                    self.pods, self.pods_error = {}, str(exc)
            else:
                self.pods = {}
            await trio.sleep(POD_POLL_S)

    # ------------------------------------------------------------------------------ the loop
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.supervisor.run)
                nursery.start_soon(self._watch_pods)
                task_status.started()
                while True:
                    await self.sync()
                    await trio.sleep(SYNC_INTERVAL_S)
        finally:
            if self._reader is not None:
                self._reader.close()
            if self.link is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.link.down)

    async def sync(self) -> None:
        session = self.session
        head = session.ledger.head
        if head is None:
            return
        me = session.key.node_id
        plan = plan_cluster(head, liveness(head), self.overlay)
        assignment = plan.of(me)
        files: NodeFiles
        if assignment.mode is K3sMode.NONE:
            files = NodeFiles(K3sMode.NONE, "", "", assignment.reason)
        elif self.supervisor.resolve_binary() is None:  # no K3s: no overlay either; the supervisor says why
            files = self._render(plan, head, me)
        elif not await self._overlay_ready(plan):
            files = NodeFiles(K3sMode.NONE, "", "", f"overlay unavailable: {self.overlay_error}")
        else:
            files = self._render(plan, head, me)
        cluster = {"datastore": plan.datastore.value, "servers": list(plan.servers), "server_url": plan.server_url}
        self.supervisor.set_plan(files, cluster_token(session.membership.secret, head.network_id), cluster)
        if files.mode is K3sMode.SERVER and self.supervisor.report().runtime == "k3s":
            if install_manager(self.paths, state_dir=session.cfg.state_dir, image=self.manager_image, node=me):
                log.info("manager manifest written into K3s's auto-deploy directory", image=self.manager_image)
            self.manager_installed = True

    def _render(self, plan, head, me) -> NodeFiles:
        try:
            return NodeFiles.render(plan, me, head.members[me].role, self.paths, self.overlay)
        except TemplateMissing as exc:
            return NodeFiles(K3sMode.NONE, "", "", str(exc))

    async def _overlay_ready(self, plan) -> bool:
        """Bring the interface up (once) and apply the desired peers; False with overlay_error set."""
        me = self.session.key.node_id
        bodies = {e.author: e.body for e in self.session.latent.entries()
                  if e.type == EntryType.OVERLAY and e.author == e.subject}
        desired = desired_overlay(me, plan.addresses, bodies, self.overlay)
        if desired is None:
            self.overlay_error = "this node has no overlay address"
            return False
        try:
            if self.link is None:
                link = WireGuardLink(self.interface, self.key)
                mode = await trio.to_thread.run_sync(link.up)
                self.link = link
                log.info("overlay up", interface=self.interface, mode=mode, address=desired.address)
            report = await trio.to_thread.run_sync(self.link.apply, desired)
            if report.added or report.removed:
                log.info("overlay peers changed", added=len(report.added), removed=len(report.removed))
        except OverlayError as exc:
            if self.overlay_error != str(exc):
                log.warning("overlay unavailable; K3s stays off and services run on the process runtime", error=str(exc))
            self.overlay_error = str(exc)
            return False
        self.overlay_error = ""
        return True
