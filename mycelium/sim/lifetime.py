"""A network's month, on the real ledger: `python -m mycelium.sim.lifetime --days 30 --seed 1`.

Devices of one household network run the real `apply_batch` (mycelium.ledger.operations), keep real
`PrimaryChain`s with a small history (so pruning happens every few hours), sign real quorum
certificates, and catch up the way the daemon does: link by link when the peer still has the links,
else by state sync (mycelium.spores.statesync: genesis → each validator-set change → the head, over
the wire format). Consensus itself is abstracted to "the up validators of the previous Primary sign
the proposer's batch when they are a quorum" (the BFT core is simulated separately, mycelium.sim).

Virtual time advances one height per `step_s`. Every step: devices crash and come back (hours to
days offline), up members send `alive` (and now and then a profile), an attacker who was admitted
replays operations it saw applied earlier, and on `join_day` a new device joins with a fresh
invite, starting from nothing. Checked, every height and at the end:
- every replayed operation is refused (the Primary is byte-identical with and without it);
- a device offline longer than the history catches up (state sync), every catch-up verifies;
- the device that joins on `join_day` is admitted;
- at the end, with everyone back, every device holds one identical Primary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from random import Random

from mycelium.identity import Genesis, NodeId, NodeKey, make_invite
from mycelium.ledger.operations import (
    MAX_BATCH, OpType, alive_operation, apply_batch, clock_operation, join_operation, last_sequence, profile_operation,
)
from mycelium.ledger.operation import NEW_MEMBER_TRUST_PPM
from mycelium.ledger.trust_rules import participation_operation
from mycelium.roles.profile import GIB, CapabilityProfile, Reachability
from mycelium.spores.certificate import QuorumCertificate, precommit_signing_bytes, quorum_size
from mycelium.spores.chain import ChainConfig, PrimaryChain, PrimaryLinks, decode_catchup
from mycelium.spores.primary import CertifiedPrimary, PrimarySpore, certify_genesis, genesis_primary
from mycelium.spores.statesync import SyncProgress

DAY_S = 86_400
T0 = 1_800_000_000  # virtual unix time of the genesis


@dataclass(frozen=True, slots=True)
class LifetimeConfig:
    days: float = 30.0
    seed: int = 1
    devices: int = 6  # founding devices (the founder included)
    step_s: int = 600  # virtual seconds per height
    history: int = 48  # links each device keeps besides the epoch links (8 h at the default step)
    dead_after_s: int = 4 * 3600  # a member silent this long is dead: its seat moves
    crash_per_day: float = 0.5  # per device: expected crashes a day
    offline_max_s: int = 2 * DAY_S  # a crashed device stays down up to this long
    replays_per_height: int = 2  # old applied operations the attacker re-submits each height
    join_day: float | None = None  # a new device joins then (default: the last day)
    withholder: int | None = None  # index of a founding device that commits but never reveals (trust)


@dataclass(slots=True)
class Device:
    key: NodeKey
    chain: PrimaryChain | None = None
    up: bool = True
    back_at: float = 0.0


@dataclass(slots=True)
class LifetimeReport:
    virtual_days: float = 0.0
    heights: int = 0
    stalled_steps: int = 0  # steps without a quorum of up validators (no height)
    epochs: int = 0
    crashes: int = 0
    link_catchups: int = 0
    state_syncs: int = 0
    replays_refused: int = 0
    replays_applied: int = 0  # must stay 0
    joined_day: float | None = None
    joiner_admitted: bool = False
    identical_at_end: bool = False
    problems: list[str] = field(default_factory=list)
    withholder_replaced_day: float | None = None  # when the withholder lost its validator seat
    lowest_honest_validator_trust_ppm: int | None = None  # over every height, of validators that signed

    @property
    def ok(self) -> bool:
        return (not self.problems and self.replays_applied == 0 and self.joiner_admitted and self.identical_at_end
                and self.state_syncs > 0)


def _profile(rng: Random) -> CapabilityProfile:
    return CapabilityProfile(cores=rng.choice((2, 4, 8)), ram_total_bytes=rng.choice((2, 4, 8)) * GIB,
                             ram_available_bytes=GIB, disk_free_bytes=64 * GIB, arch="aarch64", battery_present=False,
                             on_battery=False, uptime_s=DAY_S, load_1m_milli=200,
                             reachability=Reachability.DIRECT)


def _certify(primary: PrimarySpore, signers: list[NodeKey]) -> QuorumCertificate:
    value = primary.hash()
    msg = precommit_signing_bytes(primary.network_id, primary.height, 0, value)
    return QuorumCertificate(primary.height, 0, value, {k.node_id: k.sign(msg) for k in signers})


class Lifetime:
    def __init__(self, config: LifetimeConfig) -> None:
        self.cfg = config
        self.rng = Random(config.seed)
        keys = [NodeKey.from_seed(self.rng.randbytes(32)) for _ in range(config.devices)]
        self.founder = keys[0]
        self.genesis = Genesis(name="household", founder=self.founder.node_id, created_s=T0,
                               params={"admins": [self.founder.node_id], "dead_after_s": config.dead_after_s})
        g = genesis_primary(self.genesis)
        self.chain_config = ChainConfig(max_history=config.history)
        self.devices: dict[NodeId, Device] = {k.node_id: Device(k) for k in keys}
        self.devices[self.founder.node_id].chain = PrimaryChain(self.genesis, CertifiedPrimary(g, certify_genesis(g, self.founder)),
                                                                self.chain_config)
        self.pending: list = []  # operations waiting for the next height (founding joins first)
        self.applied: list[dict] = []  # wire of operations seen applied (what the attacker replays)
        self.now = float(T0)
        self.report = LifetimeReport()
        self.joiner: NodeId | None = None
        self.withholder = keys[config.withholder].node_id if config.withholder is not None else None
        self.invite = None
        invite = make_invite(self.founder, g.network_id, ttl_s=3600, uses=config.devices - 1, now_s=T0)
        self.pending.append(profile_operation(self.founder, g.network_id, _profile(self.rng), "sclerotium", now_s=T0))
        for k in keys[1:]:
            self.pending.append(join_operation(k, g.network_id, invite, _profile(self.rng), "sclerotium", now_s=T0))

    # ---------------------------------------------------------------------------------- helpers
    @property
    def network_id(self) -> str:
        return self.genesis.network_id

    def best(self) -> PrimaryChain | None:
        """The longest chain among the devices that are up (None: every device is down)."""
        chains = [d.chain for d in self.devices.values() if d.up and d.chain is not None]
        return max(chains, key=lambda c: c.height) if chains else None

    def catch_up(self, device: Device, source: PrimaryChain) -> None:
        """The daemon's catch-up: links after our head if the source still has them, else state sync."""
        if device.chain is not None and device.chain.height >= source.height:
            return
        after = device.chain.height if device.chain is not None else -1
        if after + 1 >= source.oldest_height:
            links = decode_catchup(PrimaryLinks(tuple(source.links_after(after, 32))).to_bytes())
            while isinstance(links, PrimaryLinks) and links.links:
                if device.chain is None:
                    device.chain = PrimaryChain(self.genesis, links.links[0], self.chain_config)
                    device.chain.extend(links.links[1:])
                else:
                    device.chain.extend(links.links)
                links = decode_catchup(PrimaryLinks(tuple(source.links_after(device.chain.height, 32))).to_bytes())
            self.report.link_catchups += 1
            return
        progress = SyncProgress(self.genesis)
        after_epoch = -1
        while progress.head is None:
            page = decode_catchup(source.sync_proof(after_epoch, 16).to_bytes())  # through the wire format
            progress.verify(page)
            after_epoch = progress.trusted_epoch
        chain = PrimaryChain.resume(self.genesis, [progress.head], self.chain_config)
        for link in progress.epoch_links:
            chain.note_epoch_link(link)
        device.chain = chain
        self.report.state_syncs += 1

    # ---------------------------------------------------------------------------------- one step
    def step(self, *, quiet: bool = False) -> None:
        cfg, rng = self.cfg, self.rng
        self.now += cfg.step_s
        for node, d in self.devices.items():  # faults: crashes and returns (none in the quiet tail)
            if d.up and node != self.joiner and not quiet and rng.random() < cfg.crash_per_day * cfg.step_s / DAY_S:
                d.up, d.back_at = False, self.now + rng.uniform(cfg.step_s, cfg.offline_max_s)
                self.report.crashes += 1
            elif not d.up and self.now >= d.back_at:
                d.up = True
        source = self.best()
        if source is None:  # the whole household is down (a power cut): time passes, nothing decides
            self.report.stalled_steps += 1
            return
        for d in self.devices.values():
            if d.up:
                self.catch_up(d, source)
        head = source.primary
        now_s = int(self.now)
        for node in sorted(head.members):  # up members say they are alive (every height here)
            d = self.devices.get(node)
            if d is not None and d.up:  # one waiting `alive` per member is enough: the newest replaces it
                self.pending = [op for op in self.pending if not (op.author == node and op.type is OpType.ALIVE)]
                self.pending.append(alive_operation(d.key, self.network_id, now_s=now_s))
                if rng.random() < 0.01:
                    self.pending.append(profile_operation(d.key, self.network_id, _profile(rng), "sclerotium", now_s=now_s))
        if self.joiner is not None and self.joiner not in head.members:  # it retries until admitted
            key = self.devices[self.joiner].key
            if self.invite.expires_s <= now_s + cfg.step_s:  # expired while the network had no quorum:
                self.invite = make_invite(self.founder, self.network_id, ttl_s=DAY_S, uses=1, now_s=now_s)  # a new one
            self.pending = [op for op in self.pending if op.author != self.joiner]
            self.pending.append(join_operation(key, self.network_id, self.invite, _profile(rng), "rhizomorph", now_s=now_s))
        validators = head.validators()
        up = [self.devices[v].key for v in validators
              if v in self.devices and self.devices[v].up and v != self.withholder]  # it never precommits
        if len(up) < quorum_size(len(validators)):
            self.report.stalled_steps += 1
            return
        proposer = up[head.height % len(up)]
        clock = clock_operation(proposer, self.network_id, now_s=now_s, seq=last_sequence(head.params, proposer.node_id) + 1)
        waiting = sorted(self.pending, key=lambda op: op.seq)
        first = [clock.to_wire()] + self._participation(source, head, proposer, now_s)
        room = MAX_BATCH - len(first)
        batch = first + [op.to_wire() for op in waiting[:room]]
        self.pending = waiting[room:]
        replays = [rng.choice(self.applied) for _ in range(cfg.replays_per_height)] if self.applied else []
        nxt = apply_batch(head, batch)
        if replays:
            with_replays = apply_batch(head, batch + replays)
            if with_replays.hash() == nxt.hash():
                self.report.replays_refused += len(replays)
            else:
                self.report.replays_applied += len(replays)
                self.report.problems.append(f"height {nxt.height}: a replayed operation changed the Primary")
        for raw in batch:
            if last_sequence(nxt.params, raw["author"]) == raw["seq"]:
                self.applied.append(raw)
        if len(self.applied) > 4096:
            self.applied = self.applied[-4096:]  # the attacker's memory (old ones stay refused anyway)
        link = CertifiedPrimary(nxt, _certify(nxt, up[: quorum_size(len(validators))]))
        source.append(link)  # verifies the certificate against head's validators
        self.report.heights += 1
        self._watch_trust(nxt, up)
        for d in self.devices.values():  # the others receive the decision (as consensus delivers it)
            if d.up and d.chain is not None and d.chain is not source and d.chain.height == head.height:
                d.chain.append(link)

    def _participation(self, source: PrimaryChain, head: PrimarySpore, proposer: NodeKey, now_s: int) -> list[dict]:
        """The proposer's trust report for `head` (trust_rules): its certificate, and the withholder
        if it was up (committed) yet absent from the certificate (no reveal, so no precommit)."""
        link = source.get(head.height)
        if link is None or link.certificate.height != head.height:
            return []
        withheld = [w for w in [self.withholder] if w in head.validators() and self.devices[w].up
                    and w not in link.certificate.signatures]
        op = participation_operation(proposer, self.network_id, link.certificate, withheld, now_s=now_s,
                                     seq=last_sequence(head.params, proposer.node_id) + 2)
        return [op.to_wire()]

    def _watch_trust(self, nxt: PrimarySpore, signers: list[NodeKey]) -> None:
        if self.withholder is not None and self.report.withholder_replaced_day is None \
                and self.withholder in nxt.members and self.withholder not in nxt.validators():
            if nxt.members[self.withholder].trust_ppm < NEW_MEMBER_TRUST_PPM:  # replaced for its trust
                self.report.withholder_replaced_day = round((self.now - T0) / DAY_S, 3)
        lowest = min((nxt.members[k.node_id].trust_ppm for k in signers if k.node_id in nxt.members), default=None)
        if lowest is not None:
            old = self.report.lowest_honest_validator_trust_ppm
            self.report.lowest_honest_validator_trust_ppm = lowest if old is None else min(old, lowest)

    def add_joiner(self) -> None:
        key = NodeKey.from_seed(self.rng.randbytes(32))
        self.joiner = key.node_id
        self.devices[key.node_id] = Device(key)  # no chain: it state-syncs from a member
        inviter = self.devices[self.founder.node_id].key
        self.invite = make_invite(inviter, self.network_id, ttl_s=DAY_S, uses=1, now_s=int(self.now))
        source = self.best()
        if source is not None:
            self.catch_up(self.devices[key.node_id], source)
        self.report.joined_day = round((self.now - T0) / DAY_S, 3)

    def run(self) -> LifetimeReport:
        cfg = self.cfg
        join_at = T0 + DAY_S * (cfg.join_day if cfg.join_day is not None else max(0.0, cfg.days - 1))
        end = T0 + cfg.days * DAY_S
        while self.now < end:
            if self.joiner is None and self.now >= join_at:
                self.add_joiner()
            self.step()
        # the end: everyone back, a quiet tail (6 virtual hours, no crashes), then one identical Primary
        for d in self.devices.values():
            d.up = True
        for _ in range(max(4, 6 * 3600 // cfg.step_s)):
            self.step(quiet=True)
        heads = {d.chain.primary.hash() for d in self.devices.values() if d.chain is not None}
        self.report.identical_at_end = len(heads) == 1 and all(d.chain is not None for d in self.devices.values())
        final = self.best().primary
        self.report.joiner_admitted = self.joiner is not None and self.joiner in final.members
        self.report.epochs = final.epoch
        self.report.virtual_days = round((self.now - T0) / DAY_S, 3)
        return self.report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mycelium.sim.lifetime", description=__doc__.splitlines()[0])
    d = LifetimeConfig()
    p.add_argument("--days", type=float, default=d.days)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--devices", type=int, default=d.devices)
    p.add_argument("--history", type=int, default=d.history)
    p.add_argument("--join-day", type=float, default=None, help="day a new device joins (default: the last day)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    report = Lifetime(LifetimeConfig(days=args.days, seed=args.seed, devices=args.devices, history=args.history,
                                     join_day=args.join_day)).run()
    out = {name: getattr(report, name) for name in report.__slots__}
    out["ok"] = report.ok
    out["real_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, sort_keys=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
