"""The trio shell around ConsensusCore: feeds it messages and clock ticks, and carries out its
effects in order — a PersistLock is fsynced before any later message goes out.

The loop and the effect interpreter are the shell's one (mycelium.shell.loop); this module only says
what consensus outputs mean. The transport is whatever carries bytes between validators without
blocking (per-peer rpc queues; nothing at all for a single-validator network). Inbound messages
are queued in a bounded inbox; when it is full, further messages are dropped and counted (the
core's rebroadcasts recover them).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import trio

from mycelium.encoding import canonical
from mycelium.identity import NodeId
from mycelium.observability.logs import get_logger
from mycelium.shell.loop import CoreLoop

from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.outcomes import Behind, Decided, Evidence, Participation, PersistLock

log = get_logger("mycelium.consensus")

STALL_LOG_S = 30.0  # a validator that decided no height for this long logs where its core stands


class Transport(Protocol):
    """Carries bytes to validators without blocking (mycelium.shell.exchange.PeerQueues)."""

    def send_nowait(self, to: NodeId, data: bytes) -> None: ...

    def broadcast_nowait(self, data: bytes) -> None: ...


class NoTransport:
    """A single-validator network has nobody to talk to."""

    def send_nowait(self, to: NodeId, data: bytes) -> None:
        return None

    def broadcast_nowait(self, data: bytes) -> None:
        return None


class ConsensusDriver(CoreLoop):
    def __init__(
        self,
        core: ConsensusCore,
        transport: Transport,
        *,
        persist_lock: Callable[[dict], None],
        on_decided: Callable[[Decided], None],
        on_evidence: Callable[[Evidence], None] | None = None,
        on_participation: Callable[[Participation], None] | None = None,
        on_behind: Callable[[Behind], None] | None = None,
    ) -> None:
        self.transport = transport
        self._on_evidence = on_evidence
        outputs = {
            PersistLock: lambda effect: persist_lock(effect.state),  # synchronous and fsynced: nothing later overtakes it
            Decided: on_decided,
            Evidence: self._evidence,
            Participation: on_participation or (lambda effect: None),
            Behind: lambda effect: self._behind(effect, on_behind),
        }
        super().__init__(core, send=lambda to, m: transport.send_nowait(to, _wire(m)),
                         broadcast=lambda m: transport.broadcast_nowait(_wire(m)), outputs=outputs, start=core.start)
        self._stall_height, self._stall_since = core.height, None  # the height and since when (trio time)
        self._interpret_effects, self.interpret = self.interpret, self._step_done

    def _step_done(self, effects: list) -> None:
        """Every core step (a message, a tick: at least every rebroadcast interval) is carried out,
        then checked for a stall. A chain that stops must say why: every STALL_LOG_S without a new
        height, a validator logs the core's round, step, locks and what it heard (consensus rejects
        input silently, by design). No task of its own: a failure stays the loop's plain exception."""
        self._interpret_effects(effects)
        now = trio.current_time()
        if self.core.height != self._stall_height or self._stall_since is None:
            self._stall_height, self._stall_since = self.core.height, now
        elif now - self._stall_since >= STALL_LOG_S and self.core.is_validator:
            self._stall_since = now
            log.warning("no height decided for a while", waited_s=STALL_LOG_S, **self.core.describe(),
                        sends_dropped=dict(getattr(self.transport, "dropped", {})),
                        sends_coalesced=getattr(self.transport, "coalesced", 0))

    def poke(self) -> None:
        """New operations are waiting: let a waiting proposer propose now."""
        self.call(self.core.poke)

    def _behind(self, effect: Behind, on_behind: Callable[[Behind], None] | None) -> None:
        log.info("behind the decision window; syncing the chain", height=effect.height, peer=effect.peer,
                 peer_height=effect.peer_height)
        if on_behind:
            on_behind(effect)

    def _evidence(self, effect: Evidence) -> None:
        log.warning("misbehaviour evidence", kind=effect.kind.value, validator=effect.validator, height=effect.height)
        if self._on_evidence:
            self._on_evidence(effect)


def _wire(message: Any) -> bytes:
    return canonical(message.to_wire() if hasattr(message, "to_wire") else message)
