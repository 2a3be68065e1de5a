"""Every mycelium protocol id and pubsub topic, namespaced by the short network id.

Two networks never share a protocol id or a topic, so a node of another network fails stream
negotiation before any byte of ours is parsed; isolation itself rests on the membership MAC
(`mycelium.mesh.membership`), the namespace only keeps traffic apart and errors obvious.
"""

from __future__ import annotations

import re

from mycelium.identity import short_network_id

PROTOCOL_PREFIX = "/mycelium"
TOPIC_PREFIX = "mycelium"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class ProtocolNameError(ValueError):
    """A handler or topic name that cannot be part of a protocol id (our caller's bug)."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProtocolNameError(
            f"name {name!r} must be 1–64 characters of lowercase letters, digits, '_', '-' or '.'"
        )
    return name


class NetworkProtocols:
    """The protocol ids and topics of one network."""

    def __init__(self, network_id: str) -> None:
        self.network_id = network_id
        self.short_id = short_network_id(network_id)
        base = f"{PROTOCOL_PREFIX}/{self.short_id}"
        self.membership = f"{base}/membership/1.0.0"  # the handshake; served to anyone not blocked
        self._rpc_base = f"{base}/rpc"

    def rpc(self, name: str) -> str:
        """`/mycelium/<netid16>/rpc/<name>/1.0.0`: one request/response per stream."""
        return f"{self._rpc_base}/{check_name(name)}/1.0.0"

    def topic(self, name: str) -> str:
        """`mycelium/<netid16>/<name>`: a gossipsub topic, e.g. `latent`, `consensus`, `svc.web`."""
        return f"{TOPIC_PREFIX}/{self.short_id}/{check_name(name)}"

    def rpc_name(self, protocol_id: str) -> str | None:
        """The handler name inside one of our rpc protocol ids, or None."""
        prefix = self._rpc_base + "/"
        if not protocol_id.startswith(prefix) or not protocol_id.endswith("/1.0.0"):
            return None
        name = protocol_id[len(prefix) : -len("/1.0.0")]
        return name if _NAME.match(name) else None


# Well-known names used by the mesh itself and by other subsystems.
RPC_PEERS = "peers"  # peer exchange: returns the admitted peers we know and their addresses
TOPIC_LATENT = "latent"  # Latent spores
TOPIC_CONSENSUS = "consensus"  # consensus fallback gossip
