"""A hostile member for the security suite: an in-process Mesh that knows the real network secret
(read from a member's network.key), so it is admitted, and then misbehaves on every protocol.

Run inside a spare namespace of the testnet (it prints one JSON summary line on stdout):

    ip netns exec NS python -m tests.fault.injector --network-key n0/network.key --listen 10.77.0.5 \
        --peer /ip4/10.77.0.1/tcp/P/p2p/ID ... [--validator-key n3/node.key [--equivocate-only]] [--seconds 8]

What it sends to every daemon:
- garbage payloads on each mycelium rpc (consensus, chain, submit, latent);
- replays of real signed consensus messages it captured earlier. Votes go to validators only, so a
  follower rebuilds them from what it does get: every decided link a validator pushes to it, and the
  links it asks for, carry a certificate whose signatures are the validators' own precommits;
- tampered Latent entries (a real entry with its body changed: bad signature) and forged ones
  (signed by itself, a non-member: unknown member), in a well-formed Delta;
- with --validator-key (a Byzantine validator: the key of a real one): two conflicting signed
  precommits for the current height and round (equivocation); with --equivocate-only nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import trio

from mycelium.consensus.messages import Precommit, sign
from mycelium.encoding import canonical
from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import MeshError, open_mesh
from mycelium.spores.chain import PrimaryLinks, PrimaryRequest, decode_catchup
from mycelium.spores.entry import MASTER_SCOPE, Entry, EntryType, make_entry
from mycelium.spores.gossip import Delta, RangeRequest, decode_message, encode_message
from mycelium.storage.network import load_membership

RPCS = ("consensus", "chain", "submit", "latent")


async def run(args: argparse.Namespace) -> dict:
    membership = load_membership(Path(args.network_key))
    assert membership is not None, f"no membership in {args.network_key}"
    net = membership.network_id
    me = NodeKey.generate()
    captured: list[bytes] = []
    decided = [0, 0]  # the newest decided height seen in a link, and how many links were seen
    deltas: list[Delta] = []
    summary: dict = {"node_id": me.node_id, "answers": {}, "errors": {}, "sent": {}, "skipped": {}}

    async def on_consensus(peer: str, data: bytes) -> bytes:
        captured.append(data)
        return b""

    def capture_links(data: bytes) -> None:
        try:
            msg = decode_catchup(data)
        except ValueError:
            return
        if not isinstance(msg, PrimaryLinks):
            return
        for link in msg.links:
            qc = link.certificate
            decided[0] = max(decided[0], qc.height)
            decided[1] += 1
            for validator, signature in qc.signatures.items():
                if len(captured) < MAX_CAPTURED:  # bounded: links keep arriving, every one replayable
                    captured.append(canonical(Precommit(qc.height, qc.round, qc.value, validator, signature).to_wire()))

    async def on_chain(peer: str, data: bytes) -> bytes:  # decided links pushed to a follower
        capture_links(data)
        return PrimaryLinks(()).to_bytes()

    async def on_latent(peer: str, data: bytes) -> bytes:
        try:
            msg = decode_message(data, max_bytes=1 << 20)
        except ValueError:
            return b""
        if isinstance(msg, Delta) and msg.entries:
            deltas.append(msg)
        return b""

    def count(table: str, key: str) -> None:
        summary[table][key] = summary[table].get(key, 0) + 1

    cfg = MeshConfig.local(listen=(f"/ip4/{args.listen}/tcp/0",))
    async with open_mesh(cfg, me, net, membership.secret) as mesh:
        mesh.register_handler("consensus", on_consensus)
        mesh.register_handler("latent", on_latent)
        mesh.register_handler("chain", on_chain)
        peers = []
        for address in args.peer:
            for attempt in range(3):  # a daemon just restarted may still be busy catching up
                try:
                    with trio.fail_after(10):
                        peers.append(await mesh.connect(address))
                    break
                except (MeshError, trio.TooSlowError) as exc:
                    summary["errors"][f"connect:{type(exc).__name__}"] = attempt + 1
                    await trio.sleep(1)
        summary["admitted_by"] = len(peers)

        failures_in_a_row: dict[str, int] = {}

        async def send(peer: str, rpc: str, data: bytes) -> None:
            # A daemon that blocked us (as it should) makes every further request fail, each after up
            # to its timeout: sent one after another to four daemons on a busy box, that took longer
            # than the test's budget. After GIVE_UP failures in a row a peer is skipped (counted).
            if failures_in_a_row.get(peer, 0) >= GIVE_UP:
                count("skipped", rpc)
                return
            try:
                answer = await mesh.request(peer, rpc, data, timeout_s=5)
                failures_in_a_row[peer] = 0
                if answer:
                    count("answers", f"{rpc}:{answer[:8].decode(errors='replace')}")
            except Exception as exc:  # noqa: BLE001 - any refusal is an acceptable answer to abuse; count it
                failures_in_a_row[peer] = failures_in_a_row.get(peer, 0) + 1
                count("errors", f"{rpc}:{type(exc).__name__}")
            count("sent", rpc)

        async def send_all(peer: str, payloads: list[bytes]) -> None:
            for data in payloads:
                await send(peer, "consensus", data)

        # 1. listen: decided links arrive pushed (and are asked for: old heights are worth replaying
        #    too); ask for the Latent entries
        for peer in peers:
            await send(peer, "latent", encode_message(RangeRequest(MASTER_SCOPE, tuple(range(256)))))
            try:
                capture_links(await mesh.request(peer, "chain", PrimaryRequest(0).to_bytes(), timeout_s=5))
            except Exception as exc:  # noqa: BLE001 - counted; pushed links still arrive
                count("errors", f"chain:{type(exc).__name__}")
        with trio.move_on_after(args.seconds / 2):
            while len(captured) < 40 or not deltas:
                await trio.sleep(0.2)
        summary["captured_consensus"] = len(captured)
        summary["captured_deltas"] = len(deltas)

        # 2. a Byzantine validator (first, while the captured heights are current): two conflicting
        #    precommits for the newest height and round seen, and for the next heights
        if args.validator_key:
            key = NodeKey.load(Path(args.validator_key))
            heights_sent = []
            for _ in range(3):  # a few times: a height in flight at one daemon may be decided at another
                links_at = decided[1]
                with trio.move_on_after(3):
                    while decided[1] <= links_at:  # fresh traffic: a height was just decided
                        await trio.sleep(0.05)
                # what a follower sees is decided: the height being voted on now is the next one
                height, round_ = decided[0] + 1, 0
                heights_sent.append(height)
                pair = [sign(Precommit(height, round_, os.urandom(32), key.node_id), key, net) for _ in range(2)]
                for h in (height, height + 1, height + 2):
                    for r in (0, 1):
                        pair += [sign(Precommit(h, r, os.urandom(32), key.node_id), key, net) for _ in range(2)]
                async with trio.open_nursery() as nursery:  # to every daemon at once: heights pass quickly
                    for peer in peers:
                        nursery.start_soon(send_all, peer, [canonical(m.to_wire()) for m in pair])
            summary["equivocated"] = {"validator": key.node_id, "heights": heights_sent}
            if args.equivocate_only:
                return summary
        # 3. tampered and forged Latent entries, in a well-formed Delta (before the floods below, which
        #    the per-peer rate limit may rightly cut short)
        real = [Entry.from_wire(e) for d in deltas for e in d.entries][:4]
        tampered = [replace(e, body={**e.body, "tampered": 1}).to_wire() for e in real]
        forged = [make_entry(me, net, EntryType.NODE, {"addrs": [], "sw": "evil", "role": "sclerotium"},
                             version=1, timestamp_ms=1).to_wire()]
        summary["tampered_entries"] = len(tampered)
        for peer in peers:
            await send(peer, "latent", encode_message(Delta(MASTER_SCOPE, tuple(tampered + forged))))


        # 4. garbage on every rpc (each daemon at once; a daemon that cut us off is given up on)
        async def garbage(peer: str) -> None:
            for rpc in RPCS:
                for size in (0, 1, 17, 300):
                    await send(peer, rpc, os.urandom(size))
                await send(peer, rpc, canonical({"v": 1, "t": 99, "x": [1, 2, 3]}))

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(garbage, peer)

        # 5. replay every captured consensus message to every daemon (at once)
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(send_all, peer, list(captured))

    return summary


MAX_CAPTURED = 80  # precommits kept to replay (each is sent to every daemon, one rpc each)
GIVE_UP = 3  # failed requests in a row after which the injector stops sending to that daemon


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network-key", required=True)
    parser.add_argument("--listen", required=True, help="the address to listen on (ours in the namespace)")
    parser.add_argument("--peer", action="append", required=True, help="a daemon's full multiaddr")
    parser.add_argument("--validator-key")
    parser.add_argument("--equivocate-only", action="store_true",
                        help="with --validator-key: stop after equivocating (the slashing that follows "
                             "rotates the network secret and cuts this process off)")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    summary = trio.run(run, args)
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
