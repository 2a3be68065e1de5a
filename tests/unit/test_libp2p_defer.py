"""What an idle daemon does not load (a regression check on import weight, not a timing), and that what
is deferred (mycelium.mesh.libp2p_defer) is the real thing as soon as it is used.

Each check runs in a fresh interpreter: the test process itself may have loaded anything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# what the daemon process imports before it is ready (python -m mycelium … up → the daemon, session, mesh)
DAEMON_IMPORTS = "import mycelium.cli.main, mycelium.cli.lifecycle, mycelium.daemon, mycelium.session, mycelium.mesh.host"
# heavy libraries an idle daemon must not load: DNS names (dnspython), mDNS off (zeroconf), RSA and
# secp256k1 peer keys and pre-shared-key networks (PyCryptodome, coincurve), QUIC (aioquic), secio (fastecdsa),
# Kademlia off
NOT_LOADED = ("dns", "dns.asyncresolver", "zeroconf", "Crypto", "coincurve", "fastecdsa", "aioquic.quic",
              "mycelium.mesh.routing", "libp2p.kad_dht")


def run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "MYCELIUM_FULL_LIBP2P"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                         env={**environ, **env})
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def loaded_after(imports: str, **env: str) -> list[str]:
    code = f"""
        import json, sys
        {imports}
        from mycelium.mesh.libp2p_defer import deferred
        print(json.dumps([m for m in {NOT_LOADED!r} if m in sys.modules and not deferred(m)]))
    """
    return json.loads(run(code, **env).strip().splitlines()[-1])


def test_the_daemon_does_not_load_what_it_does_not_use():
    assert loaded_after(DAEMON_IMPORTS) == []


def test_the_check_sees_a_full_import():
    """The same check with the trim and deferral switched off finds the heavy modules (it can fail)."""
    assert {"dns", "Crypto", "zeroconf", "coincurve"} <= set(loaded_after(DAEMON_IMPORTS, MYCELIUM_FULL_LIBP2P="1"))


def test_the_cli_alone_does_not_load_the_daemon():
    """`up --detach` and `down` read the state lock before the daemon runs: without trio, libp2p, the ledger."""
    code = """
        import json, sys
        import mycelium.cli.main, mycelium.cli.lifecycle
        heavy = ("trio", "libp2p", "mycelium.daemon", "mycelium.ledger.store", "rich")  # rich: at the first table
        print(json.dumps([m for m in heavy if m in sys.modules]))
    """
    assert json.loads(run(code).strip().splitlines()[-1]) == []


def test_stand_ins_carry_the_real_names_and_kinds():
    """Each name listed in DEFERRED is what the real module has: constants equal, functions and classes
    of the same kind, and the class-level callables py-libp2p takes at import exist on the real class."""
    code = """
        import inspect, mycelium.mesh.host
        from mycelium.mesh import libp2p_defer as d
        assert all(d.deferred(module) for module in d.DEFERRED)
        for module, names in d.DEFERRED.items():
            real = d.real_module(module)
            assert not d.deferred(module), module
            for name, kind in names.items():
                value = getattr(real, name)
                if kind is d.CLASS:
                    assert inspect.isclass(value), (module, name)
                elif kind is d.CALL:
                    assert callable(value) and not inspect.isclass(value), (module, name)
                else:
                    assert value == kind, (module, name, value)
        from libp2p.crypto.rsa import RSAPublicKey, RSAPrivateKey
        from libp2p.crypto.secp256k1 import Secp256k1PublicKey, Secp256k1PrivateKey
        for cls in (RSAPublicKey, RSAPrivateKey, Secp256k1PublicKey, Secp256k1PrivateKey):
            assert callable(cls.from_bytes), cls
        print("ok")
    """
    assert run(code).strip().endswith("ok")


def test_a_foreign_peers_rsa_or_secp256k1_key_is_still_read():
    """The deserializer table libp2p built at import (with stand-ins) reads real keys, loading the library then."""
    code = """
        import sys, mycelium.mesh.host
        from libp2p.crypto.serialization import deserialize_public_key
        from libp2p.peer.id import ID
        from mycelium.mesh.libp2p_defer import deferred
        assert deferred("libp2p.crypto.rsa") and deferred("libp2p.crypto.secp256k1")
        import libp2p.crypto.rsa as rsa, libp2p.crypto.secp256k1 as secp
        for module in (rsa, secp):
            pair = module.create_new_key_pair()
            data = pair.public_key.serialize()
            key = deserialize_public_key(data)
            assert key.serialize() == data and type(key).__module__ == module.__name__
            assert ID.from_pubkey(key) == ID.from_pubkey(pair.public_key)
            assert isinstance(key, type(pair.public_key))
        assert not deferred("libp2p.crypto.rsa") and "Crypto.PublicKey" in sys.modules
        print("ok")
    """
    assert run(code).strip().endswith("ok")


def test_a_dns_resolver_is_built_on_first_use():
    code = """
        import sys, mycelium.mesh.host
        from multiaddr.resolvers import DNSResolver
        from mycelium.mesh.libp2p_defer import deferred
        resolver = DNSResolver()  # what every swarm does
        assert isinstance(resolver, DNSResolver) and "dns" not in sys.modules
        inner = resolver._resolver  # first use: the real resolver
        import dns.asyncresolver
        assert isinstance(inner, dns.asyncresolver.Resolver) and not deferred("multiaddr.resolvers.dns")
        from multiaddr.resolvers.dns import DNSResolver as Real
        assert Real is not DNSResolver and isinstance(Real(), DNSResolver)  # later imports get the real class
        print("ok")
    """
    assert run(code).strip().endswith("ok")


def test_mdns_is_loaded_when_used():
    code = """
        import sys, mycelium.mesh.host
        from libp2p.host.basic_host import create_mdns_discovery
        from mycelium.mesh.libp2p_defer import deferred, real_module
        assert deferred("libp2p.discovery.mdns.mdns") and "zeroconf" not in sys.modules
        real = real_module("libp2p.discovery.mdns.mdns")
        assert "zeroconf" in sys.modules and not deferred("libp2p.discovery.mdns")
        import libp2p.discovery.mdns as package
        assert package.PeerListener.__module__ == "libp2p.discovery.mdns.listener"
        assert real.create_mdns_discovery is not create_mdns_discovery and create_mdns_discovery.__name__ == "create_mdns_discovery"
        print("ok")
    """
    assert run(code).strip().endswith("ok")
