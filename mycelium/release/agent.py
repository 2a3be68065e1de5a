"""The release agent: one session task that reports this node's version and follows the rollout.

Whenever a new Primary arrives (session.py wakes it) and at least every STEP_S it looks at the Primary:
  1. health: running on trial after a switch, it writes its health marker once the check passes
     (health.py) — the supervisor then keeps it — and reports `healthy`;
  2. report: what it runs and where it stands (running / opted_out / switching / healthy /
     rolled_back), resubmitted while the Primary says otherwise;
  3. ahead of its turn, once the canary proved the release (its action `wait`, the canary `done`):
     fetch the wheel from peers, verify it (sha256, the admin's signature, version) and install it
     into a new venv beside the running one — so its turn costs a restart, not an install too;
  4. its turn (rollout.plan says `upgrade`): the same if not done yet, report `switching`, and
     once that is decided stop the daemon for the switch (switch.py).
One staged release at a time: a venv installed for a release that is no longer the target, or
that failed, is forgotten and removed (switch.prune keeps only current, previous, the running one).
`auto_upgrade = false` (config.toml [release]) or a non-install.sh layout: it reports opted_out
and never switches. Publishing a release (`publish`) is here too: the API's handler calls it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from mycelium import __version__
from mycelium.ledger.operation import OpType, sign_operation
from mycelium.observability.logs import get_logger
from mycelium.release import health, switch
from mycelium.release.rollout import Rollout, plan
from mycelium.release.rules import publish_body, report_body, state_of
from mycelium.release.transfer import WheelExchange, prune as prune_wheels, store
from mycelium.release.verify import ReleaseRefused, verify_wheel
from mycelium.release.versions import PROTOCOLS, newer
from mycelium.release.wheel import inspect
from mycelium.shell.pacing import Backoff, Wakeup

log = get_logger("mycelium.release")

STEP_S = 5.0  # a look at the Primary at least this often (a new Primary wakes it at once)
RESUBMIT_S = 5.0  # a report the Primary does not show yet is sent again after this long
RETRY_FIRST_S = 1.0  # a fetch or install that failed is tried again after this long (e.g. the publisher
RETRY_S = 10.0  # has not stored the decided release yet), doubling up to RETRY_S


class ReleaseAgent:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.cfg = session.cfg.release
        self.state_dir = Path(session.cfg.state_dir)
        self.root = switch.layout_root()
        self.exchange = WheelExchange(session)
        self.started_height: int | None = None
        self.healthy = False
        self.activity = "idle"  # what the agent does now, for `mycelium release status`
        self._sent: tuple | None = None
        self._sent_at = -1e9
        self._retry_at = 0.0
        self._retry = Backoff(RETRY_FIRST_S, RETRY_S)
        self._installed: dict[str, Path] = {}  # the staged release (at most one): version → its venv
        self._wakeup = Wakeup()

    def why_not(self) -> str | None:
        """Why this node does not upgrade by itself (None: it does)."""
        if not self.cfg.auto_upgrade:
            return "auto_upgrade = false in config.toml: upgrade it by hand"
        if self.root is None:
            return f"not installed in install.sh's layout (runs from {sys.prefix}): upgrade it by hand"
        return None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.step()
            await self._wakeup.sleep(STEP_S)

    def wake(self) -> None:
        """The chain moved (a new Primary): look again now, not at the next STEP_S."""
        self._wakeup.wake()

    async def step(self) -> None:
        session = self.session
        head = session.ledger.head
        me = session.key.node_id
        if head is None or me not in head.members:
            return
        if self.started_height is None:
            self.started_height = head.height
        record = switch.read_json(switch.record_path(self.state_dir))
        on_trial = record is not None and record.get("version") == __version__ and record.get("state") in ("trial", "healthy")
        if on_trial and not self.healthy and health.healthy(started_at=self.started_height, height=head.height, member=True,
                                                            voted=self._voted(head)):
            switch.write_json(switch.health_path(self.state_dir), {"version": __version__, "pid": os.getpid()})
            self.healthy = True
            log.info("release healthy", version=__version__, height=head.height)
            if not os.environ.get(switch.SUPERVISED_ENV) and record.get("state") == "trial":
                switch.write_json(switch.record_path(self.state_dir), {**record, "state": "healthy"})
        mine = state_of(head.params)["nodes"].get(me)
        rollout = plan(head)
        rolled_back = (record is not None and record.get("state") == "rolled_back"
                       and record.get("version") == rollout.target)  # this node already tried it and failed
        turn = (rollout.action_of(me) == "upgrade" and self.why_not() is None and not on_trial and not rolled_back
                and rollout.target is not None and newer(rollout.target, __version__))
        desired = self._desired(record, on_trial, mine, rollout.target if turn else None)
        if desired is not None:
            await self._report(desired, mine)
        self._forget_stale(rollout)
        stage = (not turn and not on_trial and not rolled_back and self.why_not() is None and _proven(rollout, me)
                 and rollout.target not in self._installed and newer(rollout.target, __version__))
        if not (turn or stage) or trio.current_time() < self._retry_at:
            return
        try:
            if stage:
                await self._prepare(head, rollout.target)
            else:
                await self._take_turn(head, rollout.target, mine)
        except (switch.SwitchError, ReleaseRefused, OSError) as exc:
            self.activity = f"could not switch to {rollout.target}: {exc}"
            delay = self._retry.next()
            log.warning("release switch failed; retrying later", target=rollout.target, error=str(exc), in_s=delay)
            self._retry_at = trio.current_time() + delay

    def _voted(self, head: Any) -> bool:
        """A validator voted with this build since it started (a follower only follows the chain)."""
        me = self.session.key.node_id
        chain = self.session.ledger.chain
        if me not in head.validators():
            return True
        links = (chain.get(h) for h in range(self.started_height + 1, head.height + 1)) if chain is not None else ()
        return health.voted_since(me, self.started_height, (link.certificate for link in links if link is not None))

    def _desired(self, record: dict | None, on_trial: bool, mine: dict | None, turn: str | None) -> tuple | None:
        """(state, target, reason) this node should report, or None to leave it as it is."""
        if on_trial:
            return ("healthy", __version__, "") if self.healthy else None
        if turn is not None:
            return None  # its turn: _take_turn reports `switching` once the release is installed
        if record is not None and record.get("state") == "rolled_back" and record.get("version") != __version__:
            return ("rolled_back", record["version"], record.get("reason", ""))
        if (why := self.why_not()) is not None:
            return ("opted_out", "", why)
        return ("running", "", "")

    async def _report(self, desired: tuple, mine: dict | None) -> None:
        state, target, reason = desired
        body = report_body(__version__, PROTOCOLS, state, target, reason)
        shown = mine is not None and all(mine.get(k) == body[k] for k in ("version", "state", "target", "reason", "protocols"))
        if shown:
            return
        now = trio.current_time()
        if self._sent == desired and now - self._sent_at < RESUBMIT_S:
            return
        self._sent, self._sent_at = desired, now
        op = sign_operation(self.session.key, self.session.membership.network_id, OpType.RELEASE, body,
                            now_s=int(time.time()))
        await self.session.submit(op)

    def _forget_stale(self, rollout: Rollout) -> None:
        """A staged venv of a release that is no longer the target (a newer one was published) or
        that failed is dropped and removed from disk: one staged release at a time."""
        stale = [v for v in self._installed if v != rollout.target or rollout.failed]
        for version in stale:
            del self._installed[version]
        if stale and self.root is not None:
            switch.prune(self.root, keep={Path(sys.prefix)})
            log.info("release staged venv removed", versions=stale, reason=rollout.failed or "a newer target")

    async def _prepare(self, head: Any, target: str) -> None:
        """Fetch, verify and install the target into its own venv (nothing switches yet)."""
        release = state_of(head.params)["published"][target]
        self.activity = f"fetching the wheel of {target}"
        author = release["author"]
        peers = [author] + sorted(p for p in self.session.mesh.admitted_peers() if p != author)
        wheel = await self.exchange.fetch(release, [p for p in peers if p != self.session.key.node_id])
        if wheel is None:
            raise ReleaseRefused(f"no peer has a good copy of the wheel of {target} yet")
        verify_wheel(head, target, wheel)  # sha256, size, the admin's signature, its version
        self.activity = f"installing {target}"
        venv = await trio.to_thread.run_sync(switch.install, self.root, wheel, target)
        self._installed[target] = venv
        self._retry.reset()
        prune_wheels(self.state_dir, {r["sha256"] for r in state_of(head.params)["published"].values()})
        log.info("release installed", version=target, venv=str(venv))
        self.activity = f"{target} installed, waiting for its turn"

    async def _take_turn(self, head: Any, target: str, mine: dict | None) -> None:
        if target not in self._installed:
            await self._prepare(head, target)
        if not (mine is not None and mine["state"] == "switching" and mine["target"] == target):
            self.activity = f"reporting the switch to {target}"
            await self._report(("switching", target, ""), mine)
            return  # switch once the network has decided it (one validator at a time)
        self._switch(target, self._installed[target])

    def _switch(self, target: str, venv: Path) -> None:
        running = Path(sys.prefix)
        record = {"version": target, "from_version": __version__, "from_venv": str(running), "to_venv": str(venv),
                  "root": str(self.root), "state": "trial", "reason": "", "args": switch.daemon_args(),
                  "health_timeout_s": self.cfg.health_timeout_s, "t": int(time.time())}
        switch.write_json(switch.record_path(self.state_dir), record)
        switch.point_current(self.root, venv)
        switch.prune(self.root, keep={running, venv})
        self.activity = f"switching to {target}"
        log.info("release switch: restarting on the new version", version=target, venv=str(venv))
        node = self.session.node
        node.release_switch = True
        node.shutdown()


def _proven(rollout: Rollout, me: str) -> bool:
    """This node will take a turn and the canary already runs the target healthily: worth
    installing the release ahead of the turn (before that, only the canary installs it)."""
    mine = rollout.nodes.get(me)
    canary = rollout.nodes.get(rollout.canary) if rollout.canary else None
    return (rollout.target is not None and not rollout.failed and mine is not None and mine.action == "wait"
            and canary is not None and canary.action == "done")


def publish(node: Any, path: str, notes: str, min_from: str | None) -> dict:
    """`mycelium release publish`: check the wheel and the operation against the Primary, keep the
    wheel in this node's store (to serve it), and return the operation to submit. Raises WheelError,
    OperationError/NotAuthorized (refused: nothing stored)."""
    from mycelium.ledger.operations import check_operation

    info = inspect(Path(path))
    head = node.ledger.head
    rollout = plan(head)
    min_from = min_from or rollout.network_version or info.version
    now_s = int(time.time())
    op = sign_operation(node.key, node.membership.network_id, OpType.RELEASE,
                        publish_body(info.version, info.sha256, info.size, min_from, notes, info.protocols), now_s=now_s)
    check_operation(op, head, now_s=now_s)
    store(node.cfg.state_dir, Path(path), info.sha256)
    keep = {r["sha256"] for r in state_of(head.params)["published"].values()} | {info.sha256}
    prune_wheels(node.cfg.state_dir, keep)
    return {"op": op, "version": info.version, "sha256": info.sha256, "size": info.size, "min_from": min_from}
