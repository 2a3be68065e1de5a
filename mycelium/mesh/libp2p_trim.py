"""Stop paying for the parts of py-libp2p we never use, without forking it.

`import libp2p` (0.8.1) imports every transport and service it ships — QUIC (aioquic), AutoTLS with
ACME, circuit relay v2, WebSocket (wsproto), the DHT's diagnostics … — which
costs most of its ~86 MiB and ~1 s. The mesh uses TCP + Noise + Yamux, identify, ping, gossipsub
and (optionally) Kademlia. `install()` puts a finder first on `sys.meta_path` that answers the
unused modules with inert stand-ins: any name imported from one is a class that refuses to be
instantiated or called ("… is disabled in mycelium"; exception classes stay exceptions), so a code path that really needed it fails
loudly instead of silently; `isinstance` checks against them are simply False. A few functions
that py-libp2p calls on every host are given their honest answer for a host without that feature
(`is_quic_multiaddr` → False).

What the mesh may use but an idle daemon does not (DNS names, mDNS, RSA and secp256k1 peer keys) is
deferred instead: loaded on first use (mycelium.mesh.libp2p_defer, installed together with this).

It must run before the first `import libp2p` (mycelium.mesh.libp2p_setup does it). Set
MYCELIUM_FULL_LIBP2P=1 to import everything (to check whether a failure comes from the trim).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from typing import Any

from mycelium.mesh.libp2p_defer import FINDER, StandInLoader

# module prefixes answered by stand-ins (each with its submodules)
TRIMMED = (
    "aioquic",
    "libp2p.transport.quic",
    "libp2p.security.tls",  # libp2p's TLS security transport and AutoTLS/ACME (we secure with Noise)
    "libp2p.peer.persistent",  # on-disk peerstores
    "libp2p.transport.websocket",
    "libp2p.kad_dht.diagnostics",
    "libp2p.relay",
    "libp2p.security.secio",  # an old security transport (and fastecdsa, via libp2p.crypto.ecc)
    "libp2p.crypto.ecc",  # used only by secio and libp2p's TLS
)
# Only libp2p's own modules and libraries nothing else in a node uses (aioquic) are trimmed: the finder
# is process-wide, so a general-purpose library (requests, httpx) answered by a stand-in would break
# whoever else imports it (the kubernetes client of the K3s manager needs the real requests).

def _is_private_ip(ip: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(ip).is_private
    except ValueError:
        return False


# honest answers for functions of trimmed modules that py-libp2p calls at run time
_FUNCTIONS: dict[str, dict[str, Any]] = {
    "libp2p.transport.quic.utils": {"is_quic_multiaddr": lambda *args, **kwargs: False},
    "libp2p.relay.circuit_v2.nat": {"is_private_ip": _is_private_ip},  # basic_host picks a public IP with it
}


class _Disabled:
    """Stand-in for anything imported from a trimmed module."""

    _origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{cls._origin} is disabled in mycelium (mycelium.mesh.libp2p_trim); "
                           "set MYCELIUM_FULL_LIBP2P=1 to load it")

    def __init_subclass__(cls, **kwargs: Any) -> None:  # libp2p subclasses some of them at import
        pass


class _DisabledError(Exception):
    """Stand-in for an exception class of a trimmed module (code elsewhere names it in `except`)."""


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        base = _DisabledError if name.endswith(("Error", "Exception", "Timeout")) else _Disabled
        value = type(name, (base,), {"_origin": f"{self.__name__}.{name}"})
        setattr(self, name, value)
        return value


class _Loader(StandInLoader):
    def build(self, name: str) -> types.ModuleType:
        module = _StubModule(name)
        for attr, value in _FUNCTIONS.get(name, {}).items():
            setattr(module, attr, value)
        return module


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if any(fullname == p or fullname.startswith(p + ".") for p in TRIMMED):
            return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
        return None


_FINDER = _Finder()


def install() -> bool:
    """Install the finder (idempotent); False when disabled by MYCELIUM_FULL_LIBP2P or too late."""
    if os.environ.get("MYCELIUM_FULL_LIBP2P"):
        return False
    if "libp2p" in sys.modules and _FINDER not in sys.meta_path:
        return False  # libp2p is already imported in full; trimming now would mix the two
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)  # what may be used is loaded on first use
        sys.meta_path.insert(0, _FINDER)
    return True


def trimmed(module_name: str) -> bool:
    return isinstance(sys.modules.get(module_name), _StubModule)
