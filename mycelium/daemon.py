"""Composition root: builds a node from its config and runs every subsystem in one trio nursery tree.

    Node.prepare()   sync, fails fast with a user error: state lock, key, database, network
    Node.run()       the tree: control API ─┬─ signal watcher
                                            └─ network session (ledger, heartbeat, …), rebuilt
                                               whenever the node joins, leaves or creates a network

Shutdown (SIGTERM, SIGINT, `mycelium down`) cancels the tree; `finally` blocks close the database
(every write was already committed and fsynced) and remove the socket and lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from mycelium import __version__
from mycelium.api.server import ControlServer
from mycelium.config import Config
from mycelium.identity import IdentityError, JoinToken, NodeKey, create_network, short_network_id
from mycelium.ledger.store import Ledger, LedgerError
from mycelium.observability.logs import bind_identity, get_logger
from mycelium.observability.metrics import NodeMetrics
from mycelium.state_lock import read_lock_pid  # noqa: F401 - re-exported: callers that have the daemon loaded anyway
from mycelium.storage.db import StateDB
from mycelium.storage.network import NetworkMembership, load_membership, save_membership

log = get_logger("mycelium.daemon")

LEAVE_NOTICE_S = 5.0  # how long `mycelium leave` tries to tell the validators before it forgets the network
SHUTDOWN_ANSWER_GRACE_S = 0.05
DRAIN_TIMEOUT_S = 15.0  # clean shutdown: stopping replicas (SIGTERM, SIGKILL after their grace) at most this long
DRAIN_GOSSIP_S = 0.3  # … then this long for the "stopped" reports to leave  # between `mycelium down` being answered and the tree being cancelled
SUBSYSTEM_BACKOFF_S = (1, 2, 5, 10, 30)  # restart delays for a failing subsystem, then stay at the last
UNUSABLE_RETRY_S = 10  # a node that cannot run (disk full) tries again this often: cheap, and resumes soon


class StartupError(Exception):
    """The node cannot start; the message says why and what to do (CLI exit code 2)."""


class SessionNotRunning(Exception):
    """The node's network session is not running (yet): it is starting or switching networks."""

    def __init__(self) -> None:
        super().__init__("the node's network session is not running yet")


class NoPrimaryYet(Exception):
    """This node has not received its network's Primary yet (a joiner catching up)."""

    def __init__(self) -> None:
        super().__init__("this node has no Primary yet")


class LockHeld(StartupError):
    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another mycelium daemon ({who}) is already running on state dir {path.parent} "
            f"(it holds {path}); stop it with `mycelium --state-dir {path.parent} down`, or use another --state-dir"
        )
        self.pid = pid


def acquire_state_lock(path: Path) -> int:
    """An exclusive advisory lock on the state dir, held for the daemon's life (released by the
    kernel even after kill -9). Returns the fd; raises LockHeld naming the holder's pid."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        try:
            pid = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
        except ValueError:
            pid = None
        os.close(fd)
        raise LockHeld(path, pid) from None
    os.ftruncate(fd, 0)
    # under a release supervisor (mycelium.release.supervise) the lock names it: signals reach both
    os.pwrite(fd, f"{os.environ.get('MYCELIUM_SUPERVISOR_PID') or os.getpid()}\n".encode(), 0)
    os.fsync(fd)
    return fd


@asynccontextmanager
async def _forgetting_session(node: "Node"):
    """Hide the session from the API as soon as it starts to tear down (or fails)."""
    try:
        yield
    finally:
        node.session = None
        node.ready = False


class Node:
    def __init__(self, cfg: Config, *, join_token: str | None = None) -> None:
        self.cfg = cfg
        self._join_token = join_token
        self.metrics = NodeMetrics()
        self.started_monotonic = time.monotonic()
        self.ready = False
        self.key: NodeKey
        self.db: StateDB
        self.membership: NetworkMembership
        self.ledger: Ledger
        self._lock_fd: int | None = None
        self._root: trio.CancelScope | None = None
        self._session: trio.CancelScope | None = None
        self.session = None  # the NetworkSession of the current network, while running
        self.unusable = None  # a NodeUnusable (disk full, damaged database) while the session cannot run
        self._shutdown_requested = trio.Event()
        self.release_switch = False  # set by the release agent: after stopping, switch versions (release/switch.py)

    # ---------------------------------------------------------------------------------- startup
    def prepare(self) -> None:
        cfg = self.cfg
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StartupError(f"cannot create state dir {cfg.state_dir}: {exc.strerror}; "
                               "pick a writable one with --state-dir") from exc
        self._lock_fd = acquire_state_lock(cfg.lock_path)
        try:
            self.key, created = NodeKey.load_or_create(cfg.key_path)
            self.db = StateDB.open(cfg.db_path)
            current = load_membership(cfg.network_path)
            if self._join_token:
                joined = self._membership_from_token(self._join_token, current)
                if current is None or current.network_id != joined.network_id:
                    save_membership(cfg.network_path, joined)
                    self.db.reset_chain()
                    current = joined
            self.membership = current or self._found_personal_network()
            self.ledger = Ledger.open(self.db, self.membership, self.key)
        except (IdentityError, LedgerError) as exc:
            raise StartupError(str(exc)) from exc
        bind_identity(node=self.key.node_id, network=short_network_id(self.membership.network_id))
        if created:
            log.info("created node key", path=str(cfg.key_path))

    def _found_personal_network(self) -> NetworkMembership:
        genesis, secret = create_network(f"personal-{self.key.node_id[-8:]}", self.key, params=self._genesis_params())
        membership = NetworkMembership(genesis, secret, personal=True)
        save_membership(self.cfg.network_path, membership)
        log.info("created a personal single-node network", network=genesis.name)
        return membership

    def _genesis_params(self) -> dict:
        """Network parameters fixed at founding: the founder is the first admin (may deploy)."""
        return {"admins": [self.key.node_id], "dead_after_s": self.cfg.node.dead_after_s}

    @staticmethod
    def _membership_from_token(text: str, current: NetworkMembership | None) -> NetworkMembership:
        token = JoinToken.decode(text)
        if current is not None and not current.personal and current.network_id != token.network_id:
            raise IdentityError(
                f"this node already belongs to network {current.name!r}; run `mycelium leave` first, "
                "or run a second node for the other network with its own --state-dir"
            )
        return NetworkMembership(token.genesis, token.secret, token.bootstrap, token.invite, personal=False,
                                 secret_generation=token.secret_generation)

    def join(self, token_text: str) -> NetworkMembership:
        """`mycelium join TOKEN` on a running node."""
        self.switch_network(self._membership_from_token(token_text, self.membership))
        return self.membership

    async def leave(self) -> NetworkMembership:
        """Tell the validators this node leaves (a signed operation, best effort: at most a few
        seconds), then forget the network and fall back to a fresh personal one."""
        from mycelium.ledger.operations import OpType, sign_operation

        if self.session is not None and self.ledger.is_member(self.key.node_id) and self.ledger.member_count() > 1:
            op = sign_operation(self.key, self.membership.network_id, OpType.LEAVE, {}, now_s=int(time.time()))
            with trio.move_on_after(LEAVE_NOTICE_S):
                await self.session.submit(op)
        genesis, secret = create_network(f"personal-{self.key.node_id[-8:]}", self.key, params=self._genesis_params())
        self.switch_network(NetworkMembership(genesis, secret, personal=True))
        return self.membership

    def create_named_network(self, name: str, *, pq: bool = False) -> NetworkMembership:
        """`mycelium network create NAME [--pq]`: found a new network with this node as its sclerotium
        (`pq`: hybrid Ed25519 + ML-DSA-65 signatures for the network's whole life)."""
        if not self.membership.personal and self.ledger.member_count() > 1:
            raise IdentityError(
                f"this node is a member of network {self.membership.name!r} with other nodes; "
                "run `mycelium leave` first, or use another --state-dir for a second network"
            )
        genesis, secret = create_network(name, self.key, params=self._genesis_params(), pq=pq)
        self.switch_network(NetworkMembership(genesis, secret, personal=False))
        return self.membership

    def switch_network(self, membership: NetworkMembership) -> None:
        """Adopt another network: persist it first (fsynced), reset the chain, rebuild the session."""
        if membership.network_id == self.membership.network_id:
            return  # rejoining the network we are in: nothing changes
        save_membership(self.cfg.network_path, membership)
        self.db.reset_chain()
        self.membership = membership
        self.ledger = Ledger.open(self.db, membership, self.key)
        bind_identity(network=short_network_id(membership.network_id))
        log.info("switched network", network=membership.name, id=short_network_id(membership.network_id))
        if self._session is not None:
            self.session = None  # hide it from the API while it tears down
            self._session.cancel()

    # ---------------------------------------------------------------------------------- running
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from mycelium.api.routes import install_routes  # routes see the Node; imported late to keep api/ below us

        from mycelium.netview.service import NetView  # the page, `mycelium top`, network gauges

        server = ControlServer(self.cfg.socket_path, self.metrics)
        self.netview = NetView(self)
        install_routes(server, self)
        self.metrics.up.set(time.time())
        self.metrics.add_source(lambda: self.session)
        try:
            async with trio.open_nursery() as root:
                self._root = root.cancel_scope
                root.start_soon(self._watch_signals)
                root.start_soon(self._wait_shutdown_request)
                await root.start(self.netview.run)
                await root.start(server.serve)
                first, failures = True, 0
                while not root.cancel_scope.cancel_called:
                    try:
                        with trio.CancelScope() as self._session:
                            async with _forgetting_session(self), trio.open_nursery() as session:
                                await self._start_session(session)
                                self.ready, failures, self.unusable = True, 0, None
                                if first:
                                    log.info("node ready", version=__version__, role=self.ledger.role_of(self.key.node_id),
                                             epoch=self.ledger.height, socket=str(self.cfg.socket_path),
                                             addresses=self.addresses())
                                    task_status.started()
                                    first = False
                    except Exception as exc:  # the session could not start, or the node became unusable
                        from mycelium.shell.supervise import unusable

                        self.unusable = unusable(exc)
                        if self.unusable is not None:  # disk full, damaged database: status says what to do
                            delay = UNUSABLE_RETRY_S
                            log.error("the node cannot run its network session", reason=self.unusable.reason,
                                      fix=self.unusable.fix, retry_in_s=delay)
                        else:
                            delay = SUBSYSTEM_BACKOFF_S[min(failures, len(SUBSYSTEM_BACKOFF_S) - 1)]
                            log.exception("network session failed; restarting it", in_s=delay, failures=failures + 1)
                        failures += 1
                        self.metrics.subsystem_restarts.labels(subsystem="network_session").inc()
                        self.ready = False
                        await trio.sleep(delay)
                    self.ready = False
                    self._session = None
                    self.session = None
        finally:
            self.close()

    async def _start_session(self, nursery: trio.Nursery) -> None:
        from mycelium.session import NetworkSession  # imports libp2p: only when a node really runs

        session = NetworkSession(self)
        await nursery.start(session.run)
        self.session = session  # visible to the API only once it runs
        self.metrics.epoch.set(self.ledger.height)
        self.metrics.members.set(self.ledger.member_count())

    # ---------------------------------------------------------------------------------- views for the API
    def addresses(self) -> list[str]:
        mesh = self.session.mesh if self.session else None
        return mesh.listen_addresses() if mesh else []

    def peer_count(self) -> int:
        mesh = self.session.mesh if self.session else None
        return len(mesh.admitted_peers()) if mesh else 0

    def read_only(self) -> bool:
        watch = self.session.watch if self.session else None
        return bool(watch and watch.read_only)

    def read_only_reason(self) -> str:
        watch = self.session.watch if self.session else None
        return watch.status.reason if watch and watch.read_only else ""

    async def submit_operation(self, kind: str, payload: Any) -> None:
        """Sign a deploy/undeploy operation as this node and hand it to the validators.
        Refused in read-only mode (no quorum reachable: it could not be decided anyway). Raises the
        layers' own errors (SessionNotRunning, ReadOnlyMode, NoPrimaryYet, OperationError); the API
        maps them to statuses by type (mycelium.api.errors)."""
        from mycelium.ledger.operations import check_operation, deploy_operation, undeploy_operation
        from mycelium.roles.readonly import ReadOnlyMode

        session = self.session
        if session is None:
            raise SessionNotRunning()
        if self.read_only():
            raise ReadOnlyMode(f"this node is in read-only mode ({self.read_only_reason()}), so it accepts no deployments")
        now_s = int(time.time())
        net = self.membership.network_id
        if kind == "endophyte":
            from mycelium.ledger.operations import endophyte_operation

            op = endophyte_operation(self.key, net, payload, now_s=now_s)
        else:
            op = (deploy_operation(self.key, net, payload, now_s=now_s) if kind == "deploy"
                  else undeploy_operation(self.key, net, payload, now_s=now_s))
        if self.ledger.head is None:
            raise NoPrimaryYet()
        check_operation(op, self.ledger.head, now_s=now_s)  # OperationError (NotAuthorized: not an admin)
        await session.submit(op)

    def runtime_name(self) -> str:
        return self.runtime_report()["runtime"]

    def runtime_report(self) -> dict:
        """The workload runtime in use and why: `k3s` once K3s is ready, else `process` (mycelium.runtime.k3s)."""
        handoff = self.session.k3s if self.session is not None else None
        if handoff is None:
            return {"runtime": "process", "reason": "K3s is not enabled (install with ./install.sh --k3s)", "k3s": None}
        r = handoff.report()
        workloads = self.session.workloads
        return {"runtime": r.runtime, "reason": r.reason,
                "k3s": {"mode": r.mode, "state": r.state, "restarts": r.restarts, "pid": r.pid, "cluster": r.cluster,
                        "replicas": workloads.handover() if workloads is not None else {}}}

    def make_token(self, invite) -> str:
        return JoinToken(self.membership.genesis, self.membership.secret, tuple(self.addresses()), invite,
                         self.membership.secret_generation).encode()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("shutting down", signal=signal.Signals(signum).name)
                self.shutdown()
                return

    def shutdown(self) -> None:
        """Ask for a clean stop. The tree is cancelled by `_wait_shutdown_request`, not here, so that
        the API request asking for it (`mycelium down`) still gets its answer."""
        self._shutdown_requested.set()

    async def _wait_shutdown_request(self) -> None:
        await self._shutdown_requested.wait()
        await trio.sleep(SHUTDOWN_ANSWER_GRACE_S)
        session = self.session
        if session is not None and session.workloads is not None:
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                await session.workloads.drain()
                await trio.sleep(DRAIN_GOSSIP_S)  # let the "stopped" reports go out before the mesh closes
        self.session = None
        if self._root is not None:
            self._root.cancel()

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def uptime_s(self) -> int:
        return int(time.monotonic() - self.started_monotonic)
