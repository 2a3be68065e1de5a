"""One network session: everything a node runs for the network it belongs to, in one nursery.

    mesh ─┬─ rpc "consensus"  votes between validators (per-peer outbound queues, never blocking consensus)
          ├─ rpc "chain"      Primary catch-up (spores.chain.PrimaryCatchup in a CoreShell): links after
          │                   a height, each certificate verified on receipt, persisted before use
          ├─ rpc "submit"     operations from nodes that are not validators (joins, profiles)
          └─ rpc "seed"       Seed spores: sclerotia/rhizomorphs hand joiners a bootstrap (spores/seed_exchange.py)
    consensus driver          ConsensusCore over the ledger
    admission                 a joiner fetches the chain, then submits its join until it is a member
    profile                   publishes this node's capability profile when it changed enough
    quorum watch              read-only mode when no quorum of validators is reachable

The daemon rebuilds the session when the node joins, leaves or founds another network.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.driver import ConsensusDriver
from mycelium.consensus.outcomes import Decided
from mycelium.identity import NodeId
from mycelium.ledger.store import ConsensusApp, LedgerError
from mycelium.observability.logs import get_logger
from mycelium.shell.exchange import CoreShell, PeerQueues
from mycelium.shell.pacing import Backoff, Wakeup
from mycelium.shell.supervise import Failures, started, supervise, unusable
from mycelium.shell.transport import Transport
from mycelium.spores.latent_exchange import LatentExchange, LatentExchangeConfig
from mycelium.spores.seed_exchange import SeedExchange
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
from mycelium.spores.chain import ChainConfig, NewPrimary, PrimaryCatchup, PrimaryLinks, SyncedHead
from mycelium.storage.peers import load_peer_addresses, save_peer_addresses
from mycelium.spores.primary import ChainError
from mycelium.spores.validation import DropReason

log = get_logger("mycelium.session")

RPC_CONSENSUS, RPC_CHAIN, RPC_SUBMIT = "consensus", "chain", "submit"  # append only; then SeedExchange.RPC "seed"
PEERS_SAVE_INTERVAL_S = 30.0  # admitted peers' addresses are written this often (storage/peers.py)
EVIDENCE_QUEUE = 16  # evidence operations waiting to be submitted; more are dropped and counted


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Every timer and limit of a network session, each once. The operator's config.toml sets the
    user-facing ones (`from_node`); the rest are these documented defaults, or a preset:
    `local()` for in-process tests, `lan()` (the default: homes and offices), `wan()`."""

    consensus: ConsensusConfig = field(default_factory=ConsensusConfig.lan)  # heartbeat included
    chain: ChainConfig = field(default_factory=ChainConfig)  # catch-up interval and page size
    read_only: ReadOnlyConfig = field(default_factory=ReadOnlyConfig)
    latent: LatentExchangeConfig = field(default_factory=LatentExchangeConfig.lan)
    # A member we lost is redialled with growing backoff up to this (the mesh's default is 300 s): a
    # home network heals (Wi-Fi back, a switch rebooted) and should be whole again within half a minute.
    redial_max_s: float = 30.0
    profile_interval_s: float = 30.0  # a member re-probes its capabilities this often
    join_retry_s: float = 2.0  # a joiner resubmits its join this often until it is a member
    catchup_timeout_s: float = 10.0  # one catch-up answer (up to a page of Primaries) may take this long
    peers_interval_s: float = 2.0  # the catch-up core's peer set is refreshed from the transport this often
    watch_slack_s: float = 0.05  # the quorum watch is looked at this long after its deadline

    @classmethod
    def local(cls) -> SessionConfig:
        return cls(consensus=ConsensusConfig.local(), chain=ChainConfig(catchup_interval_s=0.5),
                   read_only=ReadOnlyConfig(enter_after_s=1.0), latent=LatentExchangeConfig.local(),
                   redial_max_s=2.0, profile_interval_s=5.0, join_retry_s=0.5, catchup_timeout_s=5.0,
                   peers_interval_s=0.2)

    @classmethod
    def lan(cls) -> SessionConfig:
        return cls()

    @classmethod
    def wan(cls) -> SessionConfig:
        return cls(consensus=ConsensusConfig.wan(), chain=ChainConfig(catchup_interval_s=5.0),
                   read_only=ReadOnlyConfig(enter_after_s=60.0), latent=LatentExchangeConfig.wan(),
                   redial_max_s=120.0, join_retry_s=5.0, catchup_timeout_s=30.0, peers_interval_s=5.0)

    def with_node(self, node: Any) -> SessionConfig:
        """The operator's knobs (config.toml [node]) over this preset: heartbeat, read-only delay."""
        return replace(self, consensus=replace(self.consensus, heartbeat_interval_s=float(node.heartbeat_s)),
                       read_only=ReadOnlyConfig(enter_after_s=float(node.read_only_after_s)))


class NetworkSession:
    def __init__(self, node: Any, transport: Transport | None = None, config: SessionConfig | None = None) -> None:
        """`transport`: the network to run on; None builds the libp2p mesh from the node's config
        (tests pass a `mycelium.testing.transport.MemoryTransport`). `config`: a preset (default
        `lan()`), with the operator's [node] knobs applied over it."""
        self.node = node
        self._given_transport = transport
        self.cfg = node.cfg
        self.config = (config or SessionConfig.lan()).with_node(node.cfg.node)
        self.key = node.key
        self.membership = node.membership
        self.ledger = node.ledger
        self.mesh: Transport | None = None  # the network (named for the mesh it is in the daemon)
        self.workloads: WorkloadRunner | None = None
        self.k3s = None  # the K3s handoff (mycelium.runtime.k3s.handoff) when [k3s] enabled
        if self.cfg.k3s.enabled:
            from mycelium.runtime.k3s.handoff import K3sHandoff

            self.k3s = K3sHandoff(self, self.cfg.k3s)
        self.endophytes: Any = None  # mycelium.ram.runner.EndophyteRunner once running
        self.driver: ConsensusDriver | None = None
        self.watch: QuorumWatch | None = None
        self.profile: CapabilityProfile | None = None
        self.rejected: Counter[str] = Counter()
        self._waiting: str | None = "starting"  # why consensus is not running, for `mycelium status`
        self._rng = random.Random()
        self._nursery: trio.Nursery | None = None
        self._consensus_scope: trio.CancelScope | None = None
        self.catchup: PrimaryCatchup | None = None
        self._caught_up_from: int | None = None  # set while a catch-up's follow-up is pending
        self._wake_watch = trio.Event()  # set when connectivity or the chain may have changed
        self._membership_wakeup = Wakeup()  # the chain changed: look at our membership now
        self.release: Any = None  # the self-upgrade agent (mycelium.release.agent), woken by each new Primary
        self._consensus_errors_past: Counter[str] = Counter()  # counts of consensus cores replaced
        self._evidence_in, self._evidence_out = trio.open_memory_channel[Any](EVIDENCE_QUEUE)
        # each subsystem restarts on its own (shell/supervise.py); what failed is in `mycelium status`
        self.failures = Failures(on_restart=lambda name: node.metrics.subsystem_restarts.labels(subsystem=name).inc())
        self._consensus_backoff = Backoff(1.0, 30.0)

    # ------------------------------------------------------------------------------------------
    def _build_mesh(self) -> Transport:
        from mycelium.mesh.config import MeshConfig
        from mycelium.mesh.host import Mesh  # imports libp2p: only when a node really runs on the mesh

        mesh_cfg = MeshConfig(
            listen=tuple(self.cfg.node.listen),
            port_fallback=True,  # a taken fixed port → an ephemeral one, with a warning (the mesh probes it)
            ping_interval_s=float(self.cfg.node.ping_interval_s),
            ping_timeout_s=min(5.0, 2.0 * self.cfg.node.ping_interval_s),
            redial_max_s=self.config.redial_max_s,
            bootstrap=tuple(self.membership.bootstrap) + tuple(self.cfg.node.bootstrap),
            mdns=self.cfg.node.mdns,
        )
        return Mesh(mesh_cfg, self.key, self.membership.network_id, self.membership.secret,
                    secret_generation=self.membership.secret_generation)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.mesh = mesh = self._given_transport or self._build_mesh()
        mesh.register_handler(RPC_CONSENSUS, self._heard(self._on_consensus))
        if hasattr(mesh, "register_stream_handler"):  # votes ride one long-lived stream per peer
            mesh.register_stream_handler(RPC_CONSENSUS, self._heard(self._on_consensus))
        mesh.register_handler(RPC_SUBMIT, self._heard(self._on_submit))
        self.latent = LatentExchange(self, self.config.latent)
        mesh.register_handler(LatentExchange.RPC, self._heard(self.latent.handle_rpc))
        self.seeds = SeedExchange(self)
        mesh.register_handler(SeedExchange.RPC, self._heard(self.seeds.handle_rpc))
        from mycelium.runtime import remote_logs  # `mycelium logs NAME --node ID` from another member

        mesh.register_handler(remote_logs.RPC_LOGS, remote_logs.make_handler(self))
        from mycelium.release.agent import ReleaseAgent  # self-upgrade: reports, rollout, the wheel (rpc "release")

        self.release = ReleaseAgent(self)
        mesh.register_handler("release", self._heard(self.release.exchange.handle_rpc))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(mesh.run)
            for node, addresses in load_peer_addresses(self.ledger.db, self.membership.network_id):
                mesh.add_addresses(node, addresses)  # dialled at once by the mesh's maintenance
            self.transport = PeerQueues(mesh, nursery, RPC_CONSENSUS, streamed=True, recipients=self._vote_recipients)
            self.catchup = PrimaryCatchup(self.key.node_id, self.ledger.chain, genesis=self.membership.genesis,
                                          config=self.config.chain, reporter=_ChainRejects(self.rejected))
            catchup = CoreShell(self.catchup, mesh, nursery, rpc_name=RPC_CHAIN, topic=None,
                                send_timeout_s=self.config.catchup_timeout_s, empty_answer=PrimaryLinks(()).to_bytes(),
                                outputs={NewPrimary: self._on_new_primary, SyncedHead: self._on_synced_head})
            mesh.register_handler(RPC_CHAIN, self._heard(catchup.handle_request))
            self._catchup_shell = catchup
            if hasattr(mesh, "on_peer_admitted"):  # ask a just-admitted peer for the chain at once
                mesh.on_peer_admitted(lambda peer: catchup.call(
                    lambda now: self.catchup.on_peer_admitted(peer, mesh.admitted_peers(), now)))
            self.profile = await trio.to_thread.run_sync(probe, self.cfg.state_dir, Reachability.UNKNOWN)
            self._start_consensus()
            self.watch = QuorumWatch(self.ledger.validators(), trio.current_time(), self_id=self.key.node_id,
                                     config=self._read_only_config())
            self.ledger.heartbeat_s = self.config.consensus.heartbeat_interval_s  # one heartbeat, two users
            self.catchup.set_peers(mesh.admitted_peers())
            failures = self.failures
            await nursery.start(supervise, "catchup", catchup.run, failures)
            for name, loop in (("peers", self._peers_loop), ("membership", self._membership_loop),
                               ("quorum_watch", self._watch_loop), ("liveness", self._alive_loop)):
                await nursery.start(supervise, name, started(loop), failures)
            from mycelium.rekey import SecretKeeper  # rekey on removal: keys, rotations, envelopes

            await nursery.start(supervise, "rekey", SecretKeeper(self).run, failures)
            await nursery.start(supervise, "evidence", started(self._evidence_loop), failures)
            await nursery.start(supervise, "peer_addresses", started(self._save_peers_loop), failures)
            await nursery.start(supervise, "latent", self.latent.run, failures)
            await nursery.start(supervise, "seed", self.seeds.run, failures)
            await nursery.start(supervise, "release", self.release.run, failures)
            if self.k3s is not None:
                await nursery.start(supervise, "k3s", self.k3s.run, failures)
            self.workloads = WorkloadRunner(self)
            await nursery.start(supervise, "workloads", self.workloads.run, failures)
            from mycelium.ram.runner import EndophyteRunner

            self.endophytes = EndophyteRunner(self)
            await nursery.start(supervise, "endophytes", self.endophytes.run, failures)
            from mycelium.storage.service import start_storage

            await start_storage(self, mesh, nursery)
            task_status.started()

    def gauges_body(self) -> dict | None:
        """This node's gauges, published in its Latent spore for the others' views and /metrics."""
        from mycelium.netview.gauges import GaugesPublisher

        if getattr(self, "_gauges", None) is None:
            self._gauges = GaugesPublisher()
        return self._gauges.body(self)

    def _read_only_config(self):
        """`network set read_only_after_s=…` (read at session start) over the session's own config."""
        head = self.ledger.head
        value = head.params.get("read_only_after_s") if head is not None else None
        if not isinstance(value, int):
            return self.config.read_only
        from dataclasses import replace

        return replace(self.config.read_only, enter_after_s=float(value))

    def _start_consensus(self) -> None:
        """(Re)start the consensus driver at the ledger's head (after a catch-up jumped it)."""
        if self._consensus_scope is not None:
            self._consensus_scope.cancel()
        if self.driver is not None:  # keep its counts: /metrics counters never go down
            self._consensus_errors_past.update(self.driver.core.errors)
        if self.ledger.head is None:
            self._waiting = "waiting for the network's chain"
            self.driver = None
            return
        self._waiting = None
        config = self.config.consensus
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
        self.ledger.discard_unstored()
        core = ConsensusCore.restore(self.key, self.membership.network_id, ConsensusApp(self.ledger), config,
                                     height=self.ledger.height + 1, prev_hash=self.ledger.head_hash, state=state)
        self.driver = ConsensusDriver(core, self.transport, persist_lock=self.ledger.persist_lock,
                                      on_decided=self._on_decided, on_evidence=self._on_evidence,
                                      on_behind=self._on_behind, on_participation=self.ledger.witness.observe)
        scope = trio.CancelScope()
        self._consensus_scope = scope
        driver = self.driver

        async def run_driver() -> None:
            with scope:
                try:
                    await driver.run()
                except Exception as exc:  # the consensus subsystem alone restarts, from the ledger's head
                    if (fatal := unusable(exc)) is not None:
                        raise fatal from exc
                    self.failures.failed("consensus", exc)
                    delay = self._consensus_backoff.next()
                    log.exception("consensus failed; rebuilding it from the ledger's head", in_s=delay)
                    await trio.sleep(delay)
                    self._start_consensus()  # cancels this scope, starts a fresh driver

        self._nursery.start_soon(run_driver)

    @property
    def consensus_errors(self) -> Counter[str]:
        """Consensus input rejected, by reason, over this session (across core rebuilds)."""
        current = self.driver.core.errors if self.driver is not None else Counter()
        return self._consensus_errors_past + current

    def _on_behind(self, behind: Any) -> None:
        """Consensus cannot catch up by itself (the peer no longer keeps those decisions): the
        catch-up core asks for the chain at its next tick instead of after a full interval."""
        if self.catchup is not None:
            self.catchup.next_at = None

    def _on_evidence(self, evidence: Any) -> None:
        """A validator signed conflicting messages: report it to the validators as an operation —
        through one bounded queue and one submitting task, so a Byzantine validator that equivocates
        on every message cannot make us spawn tasks without end (overflow dropped and counted)."""
        op = evidence_operation(self.key, self.membership.network_id, evidence.to_wire(), now_s=int(time.time()))
        try:
            self._evidence_in.send_nowait(op)
        except trio.WouldBlock:
            self.rejected["evidence_queue_full"] += 1

    async def _evidence_loop(self) -> None:
        async for op in self._evidence_out:
            await self._submit_to_validators(op)

    async def _save_peers_loop(self) -> None:
        """Admitted peers' addresses, persisted so a restart dials them at once (storage/peers.py)."""
        while True:
            await trio.sleep(PEERS_SAVE_INTERVAL_S)
            save_peer_addresses(self.ledger.db, self.membership.network_id,
                                [(p.node_id, p.addresses, p.last_seen or 0.0) for p in self.mesh.peers()
                                 if p.admitted and p.addresses])

    @property
    def consensus_state(self) -> str:
        """`voting` (a validator), `following`, or what consensus waits for."""
        if self._waiting is not None:
            return self._waiting
        return "voting" if self.key.node_id in self.ledger.validators() else "following"

    def _vote_recipients(self) -> list[NodeId]:
        """Consensus messages go to validators only — of the head and of the height being voted on;
        followers get each decided link pushed (`_push_decided`) or ask for it (catch-up)."""
        validators = set(self.ledger.validators()) | set(self.ledger.next_validators())
        return [p for p in self.mesh.admitted_peers() if p in validators]

    def _push_decided(self, height: int, validators: set[NodeId]) -> None:
        """A validator hands a decided link to every connected peer that did not vote on it (followers,
        and validators just promoted by it): they no longer hear the votes. Every voter pushes; the
        first copy is kept, the rest ignored, and a peer that missed a height asks for the gap."""
        link = self.ledger.chain.get(height) if self.ledger.chain is not None else None
        shell = getattr(self, "_catchup_shell", None)
        if link is None or shell is None:
            return
        message = PrimaryLinks((link,)).to_bytes()
        for peer in self.mesh.admitted_peers():
            if peer not in validators:
                shell.queues.send_nowait(peer, message)

    def _on_decided(self, decided: Decided) -> None:
        if self.ledger.height >= decided.height:
            return  # caught up past it already
        voters = set(self.ledger.validators())  # who certified this height: the previous head's set
        try:
            primary = self.ledger.store_decided(decided.height, decided.value, list(decided.batch), decided.certificate)
        except (LedgerError, ChainError) as exc:
            log.error("decided Primary could not be stored; resyncing from peers", height=decided.height, error=str(exc))
            return
        self._consensus_backoff.reset()  # it decides: the next failure restarts it quickly again
        if self.key.node_id in voters:
            self._push_decided(primary.height, voters)
        self.node.metrics.epoch.set(primary.height)
        self.node.metrics.members.set(len(primary.members))
        if self.watch:
            self.watch.set_validators(primary.validators())
        self._wake_watch.set()
        self.latent.primary_changed()
        self.release.wake()
        log.info("decided", height=primary.height, hash=primary.hash().hex()[:16], ops=len(decided.batch),
                 members=len(primary.members), role=primary.role_of(self.key.node_id))

    # ------------------------------------------------------------------------------ rpc handlers
    async def _on_consensus(self, peer: NodeId, data: bytes) -> bytes:
        if self.driver is not None:
            self.driver.deliver(peer, data)
        return b""

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
    def _on_synced_head(self, effect: SyncedHead) -> None:
        """After a verified state sync the ledger restarts its chain at the head and the core follows it."""
        before = self.ledger.height if self.ledger.head else -1
        if self.ledger.adopt_sync(effect.progress):
            self.catchup.chain = self.ledger.chain
            log.info("state sync: started from a recent certified Primary", from_height=before,
                     to_height=self.ledger.height, epochs=len(effect.progress.epoch_links))
            if self._caught_up_from is None:
                self._caught_up_from = before
                self._nursery.start_soon(self._after_catchup)

    def _on_new_primary(self, effect: NewPrimary) -> None:
        """The catch-up core verified and appended a Primary: persist it (fsynced) before anything acts
        on it; consensus, the watch and the Latent validator follow once per answer."""
        before = self.ledger.height if self.ledger.head else -1
        self.ledger.record_link(self.catchup.chain, effect.link)
        self._membership_wakeup.wake()  # e.g. submit the join now that we have the chain
        self.release.wake()
        if self._caught_up_from is None:
            self._caught_up_from = before
            self._nursery.start_soon(self._after_catchup)

    async def _after_catchup(self) -> None:
        before, self._caught_up_from = self._caught_up_from, None
        # a follower takes every height from a pushed link: one height is routine, not news
        (log.info if self.ledger.height - before > 1 else log.debug)("caught up", from_height=before,
                                                                      to_height=self.ledger.height)
        self._start_consensus()
        if self.watch:
            self.watch.set_validators(self.ledger.validators())
        self._wake_watch.set()
        self.latent.primary_changed()

    async def _membership_loop(self) -> None:
        """Joiners submit their join until admitted; members publish their profile when it changed."""
        published: CapabilityProfile | None = None
        join_retry = Backoff(min(0.1, self.config.join_retry_s), self.config.join_retry_s)
        next_join_at = 0.0
        while True:
            head = self.ledger.head
            me = self.key.node_id
            now_s = int(time.time())
            if head is not None and me not in head.members and self.membership.invite is not None:
                if trio.current_time() >= next_join_at:  # resubmit on schedule, not on every new Primary
                    op = join_operation(self.key, self.membership.network_id, self.membership.invite, self.profile,
                                        self.cfg.node.max_role, now_s=now_s)
                    await self._submit_to_validators(op)
                    next_join_at = trio.current_time() + join_retry.next()
                # a new Primary wakes us at once (does it admit us?)
                await self._membership_wakeup.sleep(max(0.0, next_join_at - trio.current_time()))
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
            await self._membership_wakeup.sleep(self.config.profile_interval_s if published else self.config.join_retry_s)

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
            except self.mesh.request_errors as exc:  # the network failed: another validator may take it
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

    def _heard(self, handler: Any) -> Any:
        """An rpc handler that first tells the quorum watch a peer reached us."""
        async def heard(peer: NodeId, data: bytes) -> bytes:
            self._wake_watch.set()
            return await handler(peer, data)

        return heard

    async def _peers_loop(self) -> None:
        """The transport has no "peers changed" event: the catch-up core's peer set is refreshed."""
        while True:
            await trio.sleep(self.config.peers_interval_s)
            self.catchup.set_peers(self.mesh.admitted_peers())

    async def _watch_loop(self) -> None:
        """Observe reachability when a peer reached us, when the chain moved, and at the watch's own
        deadline (when read-only mode starts unless a quorum is seen before)."""
        while True:
            self._wake_watch = trio.Event()
            peers = self.mesh.admitted_peers()
            status = self.watch.observe(trio.current_time(), peers, caught_up=self.ledger.head is not None)
            self.node.metrics.read_only.set(1 if status.read_only else 0)
            self.node.metrics.peers.set(len(peers))
            deadline = self.watch.deadline()
            if deadline is not None:  # the watch enters read-only strictly after it: look just past it
                deadline = max(deadline, trio.current_time()) + self.config.watch_slack_s
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wake_watch.wait()


class _ChainRejects:
    """The catch-up core's trust reports, counted where `mycelium status` and /metrics read them."""

    def __init__(self, rejected: Counter[str]) -> None:
        self.rejected = rejected

    def report_invalid(self, sender: NodeId, author: NodeId | None, reason: DropReason) -> None:
        if reason is DropReason.BAD_PRIMARY:
            self.rejected["bad_chain"] += 1
            log.warning("refused Primary links from peer", peer=sender)
        else:
            self.rejected[f"chain_{reason.value}"] += 1
