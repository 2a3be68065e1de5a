"""Rekey on removal, the node's side (trio shell over mycelium.ledger.governance and mycelium.envelopes).

Each step looks at the ledger's head:
  1. a member whose key-agreement key is not in the Primary registers it (a `keys` operation);
  2. the validator `rekeyer(head)` names draws a fresh secret and submits the `rekey` (retried if
     the batch dropped it, e.g. because a join raced it);
  3. when the head records a newer secret generation than ours, we open our envelope, check it
     against the recorded hash, persist it (fsynced) *before* using it, and tell the mesh to rotate:
     non-members are disconnected at once, members on the old secret after OVERLAP_S.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Any

import trio

from mycelium.envelopes import EnvelopeError, KemKey, seal, secret_hash
from mycelium.identity import scheme_of
from mycelium.ledger import governance
from mycelium.ledger.operations import OpType, sign_operation
from mycelium.observability.logs import get_logger
from mycelium.storage.keyring import PARAM as PAST_PARAM
from mycelium.storage.keyring import past_for_rotation
from mycelium.storage.network import save_membership

log = get_logger("mycelium.rekey")

POLL_S = 0.5
KEYS_RETRY_S = 5.0  # resend our `keys` operation this often until the Primary records it
REKEY_RETRY_HEIGHTS = 3  # our rekey did not land after this many heights: draw and submit again
OVERLAP_S = 20.0  # members still proving the previous secret are accepted this long after a rotation


class SecretKeeper:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.node = session.node
        self.kem = KemKey(session.key.seed())
        self._keys_sent_at = float("-inf")
        self._rekey_sent: tuple[int, int] | None = None  # (generation, height) of our last rekey
        self._missing_logged = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                await self.step(nursery)
                await trio.sleep(POLL_S)

    async def step(self, nursery: trio.Nursery) -> None:
        head = self.session.ledger.head
        if head is None:
            return
        me, net = self.session.key.node_id, self.node.membership.network_id
        pq = scheme_of(net).post_quantum
        if me in head.members:
            own = self.kem.public(pq)
            if head.members[me].caps.get("kem") != own and time.monotonic() - self._keys_sent_at > KEYS_RETRY_S:
                self._keys_sent_at = time.monotonic()
                await self.session.submit(sign_operation(self.session.key, net, OpType.KEYS, {"kem": own},
                                                         now_s=int(time.time())))
            await self._maybe_rekey(head, me, net, pq)
        await self._maybe_adopt(head, me, net, pq, nursery)

    async def _maybe_rekey(self, head: Any, me: str, net: str, pq: bool) -> None:
        if governance.rekeyer(head) != me:
            return
        gen = head.params[governance.REKEY_DUE]["gen"]
        if self._rekey_sent is not None and self._rekey_sent[0] == gen and head.height < self._rekey_sent[1] + REKEY_RETRY_HEIGHTS:
            return
        secret = secrets.token_bytes(32)
        envelopes = {n: seal(secret, head.members[n].caps["kem"], network_id=net, generation=gen, node_id=n, pq=pq)
                     for n in governance.envelope_recipients(head)}
        body = {"gen": gen, "hash": secret_hash(secret, net, gen), "env": envelopes,
                "past": past_for_rotation(net, held_generation=self.node.membership.secret_generation,
                                          held_secret=self.node.membership.secret,
                                          primary_past=head.params.get(PAST_PARAM),
                                          primary_generation=governance.secret_generation(head),
                                          new_secret=secret, new_generation=gen)}
        self._rekey_sent = (gen, head.height)
        log.info("rekey.submitted", generation=gen, recipients=len(envelopes),
                 removed=len(head.params[governance.REKEY_DUE].get("removed", [])))
        await self.session.submit(sign_operation(self.session.key, net, OpType.REKEY, body, now_s=int(time.time())))

    async def _maybe_adopt(self, head: Any, me: str, net: str, pq: bool, nursery: trio.Nursery) -> None:
        membership = self.node.membership
        gen = governance.secret_generation(head)
        if gen <= membership.secret_generation or me not in head.members:
            return
        record = head.params[governance.SECRET]
        if secret_hash(membership.secret, net, gen) == record["hash"]:
            secret = membership.secret  # we joined with a token issued after this rotation
        else:
            envelope = head.params.get(governance.ENVELOPES, {}).get(me)
            try:
                if envelope is None:
                    raise EnvelopeError("the rotation carries no envelope for this node (no key-agreement key "
                                        "in the Primary when it was drawn)")
                secret = self.kem.open(envelope, network_id=net, generation=gen, node_id=me, pq=pq)
                if secret_hash(secret, net, gen) != record["hash"]:
                    raise EnvelopeError("the opened secret does not match the hash the Primary records")
            except EnvelopeError as exc:
                if self._missing_logged != gen:
                    self._missing_logged = gen
                    log.error("rekey.unusable", generation=gen, error=str(exc),
                              hint="this node keeps the old secret; ask an admin for a new invite and rejoin")
                return
        updated = replace(membership, secret=secret, secret_generation=gen)
        save_membership(self.node.cfg.network_path, updated)  # fsynced before the mesh uses it
        self.node.membership = updated
        self.session.membership = updated
        log.info("rekey.adopted", generation=gen)
        rotate = getattr(self.session.mesh, "rotate_secret", None)
        if rotate is not None:
            ledger = self.session.ledger
            nursery.start_soon(lambda: rotate(gen, secret, is_member=lambda n: ledger.head is not None
                                              and n in ledger.head.members, overlap_s=OVERLAP_S))
