"""Open a libp2p stream on an existing connection, never by dialling.

py-libp2p's `host.new_stream(peer, …)` dials a peer it holds no connection to, from the addresses in
its peerstore and with its own retries. A ping, rpc or message stream that races a disconnect would
thus reconnect behind the mesh's back, past the block gate, the connection cap and the redial backoff
(seen in CI: a dial started while a peer restarted retried until it was back, and `dial_attempts`
never counted it). SwarmConn removes a closing connection from the swarm 0.1 s before it notifies
the disconnect, so clearing the peerstore on disconnect (admission.py) leaves that window open.
Every dial of the mesh goes through `Discovery.dial`; everything else opens streams here.
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

from typing import Any, Sequence

from libp2p.exceptions import BaseLibp2pError


class NotConnected(BaseLibp2pError):
    """No open connection to the peer: the stream is not opened (and nothing is dialled)."""


async def open_stream(host: Any, peer_id: Any, protocols: Sequence[Any]) -> Any:
    # No await between the check and new_stream's own check, so no disconnect can come in between.
    if not host.get_network().get_connections(peer_id):
        raise NotConnected(f"no open connection to {peer_id}")
    return await host.new_stream(peer_id, list(protocols))
