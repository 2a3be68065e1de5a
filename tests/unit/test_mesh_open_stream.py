"""A stream is opened only on an existing connection: py-libp2p's new_stream would dial otherwise."""

import pytest
import trio

from mycelium.mesh.open_stream import NotConnected, open_stream


class FakeHost:
    def __init__(self, connections):
        self.connections = connections
        self.opened = []

    def get_network(self):
        return self

    def get_connections(self, peer_id):
        return self.connections.get(peer_id, [])

    async def new_stream(self, peer_id, protocols):
        self.opened.append((peer_id, protocols))
        return "stream"


def test_no_connection_no_stream_and_no_dial():
    host = FakeHost({})
    with pytest.raises(NotConnected, match="no open connection to peer-a"):
        trio.run(open_stream, host, "peer-a", ["/p/1"])
    assert host.opened == []  # new_stream (which would have dialled) was never called


def test_a_connected_peer_gets_its_stream():
    host = FakeHost({"peer-a": ["conn"]})
    assert trio.run(open_stream, host, "peer-a", ("/p/1",)) == "stream"
    assert host.opened == [("peer-a", ["/p/1"])]
