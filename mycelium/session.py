"""One network session: everything a node runs for the network it belongs to, in one nursery.

    mesh ─┬─ rpc "consensus"  votes between validators (per-peer outbound queues, never blocking consensus)
          ├─ rpc "chain"      Primary catch-up: links after a height, each certificate verified on receipt
          └─ rpc "submit"     operations from nodes that are not validators (joins, profiles)
    consensus driver          ConsensusCore over the ledger
    admission                 a joiner fetches the chain, then submits its join until it is a member
    profile                   publishes this node's capability profile when it changed enough
    quorum watch              read-only mode when no quorum of validators is reachable

The daemon rebuilds the session when the node joins, leaves or founds another network.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import trio

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.driver import ConsensusDriver
from mycelium.consensus.outcomes import Decided
from mycelium.identity import NodeId
from mycelium.ledger.store import ConsensusApp, LedgerError
from mycelium.observability.logs import get_logger
from mycelium.shell.exchange import PeerQueues
from mycelium.shell.transport import Transport
from mycelium.spores.latent_exchange import LatentExchange
from mycelium.runtime.runner import WorkloadRunner
from mycelium.ledger.operations import (
    DEAD_AFTER,
    DEFAULT_DEAD_AFTER_S,
    Operation,
    OperationError,
    alive_operation,
    evidence_operation,
    join_operation,
    profile_operation,
)
from mycelium.roles.probe import probe
from mycelium.roles.profile import CapabilityProfile, ProfileError, Reachability, changed_enough
from mycelium.roles.readonly import QuorumWatch, ReadOnlyConfig
from mycelium.spores.chain import CatchupMessageError, PrimaryLinks, PrimaryRequest, decode_catchup
from mycelium.spores.primary import ChainError

log = get_logger("mycelium.session")

RPC_CONSENSUS, RPC_CHAIN, RPC_SUBMIT = "consensus", "chain", "submit"  # append only
CATCHUP_INTERVAL_S = 2.0
# A member we lost is redialled with growing backoff up to this (the mesh's default is 300 s): a
# home network heals (Wi-Fi back, a switch rebooted) and should be whole again within half a minute.
REDIAL_MAX_S = 30.0
PROFILE_INTERVAL_S = 30.0
JOIN_RETRY_S = 2.0
WATCH_INTERVAL_S = 1.0
MAX_LINKS = 32


class NetworkSession:
    def __init__(self, node: Any, transport: Transport | None = None) -> None:
        """`transport`: the network to run on; None builds the libp2p mesh from the node's config
        (tests pass a `mycelium.testing.transport.MemoryTransport`)."""
        self.node = node
        self._given_transport = transport
        self.cfg = node.cfg
        self.key = node.key
        self.membership = node.membership
        self.ledger = node.ledger
        self.mesh: Transport | None = None  # the network (named for the mesh it is in the daemon)
        self.workloads: WorkloadRunner | None = None
        self.driver: ConsensusDriver | None = None
        self.watch: QuorumWatch | None = None
        self.profile: CapabilityProfile | None = None
        self.rejected: Counter[str] = Counter()
        self._waiting: str | None = "starting"  # why consensus is not running, for `mycelium status`
        self._rng = random.Random()
        self._nursery: trio.Nursery | None = None
        self._consensus_scope: trio.CancelScope | None = None

    # ------------------------------------------------------------------------------------------
    def _build_mesh(self) -> Transport:
        from mycelium.mesh.config import MeshConfig
        from mycelium.mesh.host import Mesh  # imports libp2p: only when a node really runs on the mesh

        mesh_cfg = MeshConfig(
            listen=tuple(self.cfg.node.listen),
            port_fallback=True,  # a taken fixed port → an ephemeral one, with a warning (the mesh probes it)
            ping_interval_s=float(self.cfg.node.ping_interval_s),
            ping_timeout_s=min(5.0, 2.0 * self.cfg.node.ping_interval_s),
            redial_max_s=REDIAL_MAX_S,
            bootstrap=tuple(self.membership.bootstrap) + tuple(self.cfg.node.bootstrap),
            mdns=self.cfg.node.mdns,
        )
        return Mesh(mesh_cfg, self.key, self.membership.network_id, self.membership.secret)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.mesh = mesh = self._given_transport or self._build_mesh()
        mesh.register_handler(RPC_CONSENSUS, self._on_consensus)
        mesh.register_handler(RPC_CHAIN, self._on_chain)
        mesh.register_handler(RPC_SUBMIT, self._on_submit)
        self.latent = LatentExchange(self)
        mesh.register_handler(LatentExchange.RPC, self.latent.handle_rpc)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(mesh.run)
            self.transport = PeerQueues(mesh, nursery, RPC_CONSENSUS)
            self.profile = await trio.to_thread.run_sync(probe, self.cfg.state_dir, Reachability.UNKNOWN)
            self._start_consensus()
            self.watch = QuorumWatch(self.ledger.validators(), trio.current_time(), self_id=self.key.node_id,
                                     config=ReadOnlyConfig(enter_after_s=float(self.cfg.node.read_only_after_s)))
            self.ledger.heartbeat_s = self.cfg.node.heartbeat_s
            nursery.start_soon(self._catchup_loop)
            nursery.start_soon(self._membership_loop)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self._alive_loop)
            await nursery.start(self.latent.run)
            self.workloads = WorkloadRunner(self)
            await nursery.start(self.workloads.run)
            from mycelium.storage.service import start_storage

            await start_storage(self, mesh, nursery)
            task_status.started()

    def _start_consensus(self) -> None:
        """(Re)start the consensus driver at the ledger's head (after a catch-up jumped it)."""
        if self._consensus_scope is not None:
            self._consensus_scope.cancel()
        if self.ledger.head is None:
            self._waiting = "waiting for the network's chain"
            self.driver = None
            return
        self._waiting = None
        config = ConsensusConfig(heartbeat_interval_s=float(self.cfg.node.heartbeat_s))
        state = self.ledger.load_lock()
        next_height = self.ledger.height + 1
        if state is not None and isinstance(state.get("h"), int) and state["h"] > next_height:
            # This node signed votes at a height its chain has not reached (its chain was damaged or
            # lost): voting again below that could contradict them. Catch up first.
            log.warning("waiting to catch up before voting again", lock_height=state["h"], chain_height=self.ledger.height)
            self._waiting = (f"waiting to catch up to height {state['h'] - 1} before voting again "
                                    f"(it voted there before its chain was damaged or lost)")
            self.driver = None
            return
        if state is not None and state.get("h") != next_height:
            state = None  # the lock was for a height this node has since seen decided
        core = ConsensusCore.restore(self.key, self.membership.network_id, ConsensusApp(self.ledger), config,
                                     height=self.ledger.height + 1, prev_hash=self.ledger.head_hash, state=state)
        self.driver = ConsensusDriver(core, self.transport, persist_lock=self.ledger.persist_lock,
                                      on_decided=self._on_decided, on_evidence=self._on_evidence)
        scope = trio.CancelScope()
        self._consensus_scope = scope

        async def run_driver() -> None:
            with scope:
                await self.driver.run()

        self._nursery.start_soon(run_driver)

    def _on_evidence(self, evidence: Any) -> None:
        """A validator signed conflicting messages: report it to the validators as an operation."""
        op = evidence_operation(self.key, self.membership.network_id, evidence.to_wire(), now_s=int(time.time()))
        self._nursery.start_soon(self._submit_to_validators, op)

    @property
    def consensus_state(self) -> str:
        """`voting` (a validator), `following`, or what consensus waits for."""
        if self._waiting is not None:
            return self._waiting
        return "voting" if self.key.node_id in self.ledger.validators() else "following"

    def _on_decided(self, decided: Decided) -> None:
        if self.ledger.height >= decided.height:
            return  # caught up past it already
        try:
            primary = self.ledger.store_decided(decided.height, decided.value, list(decided.batch), decided.certificate)
        except (LedgerError, ChainError) as exc:
            log.error("decided Primary could not be stored; resyncing from peers", height=decided.height, error=str(exc))
            return
        self.node.metrics.epoch.set(primary.height)
        self.node.metrics.members.set(len(primary.members))
        if self.watch:
            self.watch.set_validators(primary.validators())
        self.latent.primary_changed()
        log.info("decided", height=primary.height, hash=primary.hash().hex()[:16], ops=len(decided.batch),
                 members=len(primary.members), role=primary.role_of(self.key.node_id))

    # ------------------------------------------------------------------------------ rpc handlers
    async def _on_consensus(self, peer: NodeId, data: bytes) -> bytes:
        if self.driver is not None:
            self.driver.deliver(peer, data)
        return b""

    async def _on_chain(self, peer: NodeId, data: bytes) -> bytes:
        try:
            request = decode_catchup(data)
        except CatchupMessageError as exc:
            self.rejected[f"chain_{exc.reason.value}"] += 1
            return PrimaryLinks(()).to_bytes()
        if not isinstance(request, PrimaryRequest) or self.ledger.chain is None:
            return PrimaryLinks(()).to_bytes()
        return PrimaryLinks(tuple(self.ledger.chain.links_after(request.after_height, MAX_LINKS))).to_bytes()

    async def _on_submit(self, peer: NodeId, data: bytes) -> bytes:
        from mycelium.encoding import EncodingError, decode

        try:
            op = Operation.from_wire(decode(data))
            self.ledger.submit(op)
        except (EncodingError, OperationError, LedgerError) as exc:
            self.rejected["submit"] += 1
            return f"refused: {exc}".encode()
        if self.driver is not None:
            self.driver.poke()
        return b"ok"

    # ------------------------------------------------------------------------------ loops
    async def _catchup_loop(self) -> None:
        """Ask a random admitted peer for the links after our head; verify and store them."""
        while True:
            peers = self.mesh.admitted_peers()
            if peers:
                peer = self._rng.choice(peers)
                try:
                    answer = await self.mesh.request(peer, RPC_CHAIN, PrimaryRequest(self.ledger.height if self.ledger.head else -1).to_bytes(), timeout_s=10)
                    links = decode_catchup(answer)
                    if isinstance(links, PrimaryLinks) and links.links:
                        before = self.ledger.height if self.ledger.head else -1
                        added = self.ledger.adopt_links(sorted(links.links, key=lambda l: l.primary.height))
                        if added:
                            log.info("caught up", from_height=before, to_height=self.ledger.height, peer=peer)
                            self._start_consensus()
                            if self.watch:
                                self.watch.set_validators(self.ledger.validators())
                            self.latent.primary_changed()
                            continue  # more may follow
                except (CatchupMessageError, ChainError, LedgerError) as exc:
                    self.rejected["bad_chain"] += 1
                    log.warning("refused Primary links from peer", peer=peer, error=str(exc))
                except Exception as exc:  # mesh errors (timeouts, refused streams): try another peer later
                    log.debug("catch-up request failed", peer=peer, error=repr(exc))
            await trio.sleep(CATCHUP_INTERVAL_S)

    async def _membership_loop(self) -> None:
        """Joiners submit their join until admitted; members publish their profile when it changed."""
        published: CapabilityProfile | None = None
        while True:
            head = self.ledger.head
            me = self.key.node_id
            now_s = int(time.time())
            if head is not None and me not in head.members and self.membership.invite is not None:
                op = join_operation(self.key, self.membership.network_id, self.membership.invite, self.profile,
                                    self.cfg.node.max_role, now_s=now_s)
                await self._submit_to_validators(op)
                await trio.sleep(JOIN_RETRY_S)
                continue
            if head is not None and me in head.members:
                self.profile = await trio.to_thread.run_sync(probe, self.cfg.state_dir, self._reachability())
                member = head.members[me]
                try:
                    current = CapabilityProfile.from_wire(member.profile) if member.profile else None
                except ProfileError:
                    current = None
                labels = dict(label.split("=", 1) for label in self.cfg.node.labels)
                cap_changed = member.caps.get("max_role") != self.cfg.node.max_role or member.caps.get("labels", {}) != labels
                if (changed_enough(current, self.profile) or cap_changed) and published != self.profile:
                    op = profile_operation(self.key, self.membership.network_id, self.profile, self.cfg.node.max_role,
                                           now_s=now_s, labels=labels)
                    await self._submit_to_validators(op)
                    published = self.profile
            await trio.sleep(PROFILE_INTERVAL_S if published else JOIN_RETRY_S)

    async def submit(self, op: Operation) -> None:
        """Hand an operation this node authored to the validators (ourselves included)."""
        await self._submit_to_validators(op)

    async def _submit_to_validators(self, op: Operation) -> None:
        from mycelium.encoding import canonical

        if self.key.node_id in self.ledger.validators():
            try:
                self.ledger.submit(op)
            except LedgerError as exc:
                log.warning("own operation refused", op=op.type.value, error=str(exc))
            if self.driver:
                self.driver.poke()
            return
        data = canonical(op.to_wire())
        for validator in self.ledger.validators():
            if validator not in self.mesh.admitted_peers():
                continue
            try:
                answer = await self.mesh.request(validator, RPC_SUBMIT, data, timeout_s=10)
                if answer != b"ok":
                    log.warning("operation refused by validator", op=op.type.value, validator=validator,
                                answer=answer[:200].decode(errors="replace"))
            except Exception as exc:  # mesh errors: another validator may take it
                log.debug("submit failed", validator=validator, error=repr(exc))

    def _reachability(self) -> Reachability:
        return Reachability.DIRECT if self.mesh and self.mesh.admitted_peers() else Reachability.UNKNOWN

    async def _alive_loop(self) -> None:
        """Tell the validators we are up, four times per dead_after_s (a signed `alive` operation)."""
        while True:
            head = self.ledger.head
            dead_after = head.params.get(DEAD_AFTER, DEFAULT_DEAD_AFTER_S) if head else DEFAULT_DEAD_AFTER_S
            if head is not None and self.key.node_id in head.members:
                await self._submit_to_validators(alive_operation(self.key, self.membership.network_id,
                                                                 now_s=int(time.time())))
            await trio.sleep(max(1.0, dead_after / 4))

    async def _watch_loop(self) -> None:
        while True:
            status = self.watch.observe(trio.current_time(), self.mesh.admitted_peers(), caught_up=self.ledger.head is not None)
            self.node.metrics.read_only.set(1 if status.read_only else 0)
            self.node.metrics.peers.set(len(self.mesh.admitted_peers()))
            await trio.sleep(WATCH_INTERVAL_S)
