"""Load the parts of py-libp2p a node rarely needs only when it first needs them, without forking it.

`mycelium.mesh.libp2p_trim` answers what the mesh never uses with stand-ins that refuse to work.
This module is its other half, for what the mesh *may* use but an idle daemon does not: DNS names
in multiaddrs (dnspython, ~2.8 MiB and ~0.12 s at import, because py-libp2p builds a resolver for
every swarm), mDNS when it is switched off (zeroconf, ~5.3 MiB), and RSA and secp256k1 peer keys
(PyCryptodome and coincurve, ~4 MiB and ~0.14 s; members have Ed25519 keys, so only a foreign peer
presenting another key type needs them), and libp2p's pre-shared-key private networks (Salsa20 from
PyCryptodome, ~1.5 MiB; the mesh passes psk=None and secures membership itself).

A deferred module is answered at import by a stand-in that carries just the names py-libp2p takes
from it at import time (listed in DEFERRED). Everything else behaves like the real module, loaded
on first real use:

- a function forwards each call to the real function;
- a class forwards calls of its class-level callables (`RSAPublicKey.from_bytes`, which
  `libp2p.crypto.serialization` puts in a table at import) and, called itself, returns a proxy
  that builds the real instance on first attribute access (py-libp2p builds a `DNSResolver` for
  every swarm and transport but uses it only to dial a `/dns…` address);
- any name not listed loads the real module at once and is the real attribute;
- once loaded, `sys.modules` holds the real module, so later imports get the real thing.

Constants listed here are copies; tests/unit/test_libp2p_defer.py checks each against the real module
(and each listed name's kind), so a py-libp2p upgrade that changes them fails a test, not a node.
Installed by `libp2p_trim.install()`; MYCELIUM_FULL_LIBP2P=1 switches both off.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from typing import Any


class _Call:
    """A function: each call is forwarded to the real one."""


class _Class:
    """A class: class-level callables are forwarded, instances are built on first use."""


CALL, CLASS = _Call(), _Class()

# deferred module -> the names py-libp2p imports from it at import time (a package covers its submodules)
DEFERRED: dict[str, dict[str, Any]] = {
    "multiaddr.resolvers.dns": {"DNSResolver": CLASS, "DNSADDR_TXT_PREFIX": "dnsaddr="},
    "libp2p.discovery.mdns": {"MDNSDiscovery": CLASS, "create_mdns_discovery": CALL,
                              "PeerBroadcaster": CLASS, "PeerListener": CLASS},
    "libp2p.discovery.mdns.mdns": {"MDNSDiscovery": CLASS, "create_mdns_discovery": CALL},
    "libp2p.crypto.rsa": {"RSAPublicKey": CLASS, "RSAPrivateKey": CLASS, "create_new_key_pair": CALL},
    "libp2p.crypto.secp256k1": {"Secp256k1PublicKey": CLASS, "Secp256k1PrivateKey": CLASS,
                                "create_new_key_pair": CALL},
    "libp2p.security.pnet": {},  # private networks by pre-shared key (Salsa20 from PyCryptodome); we pass psk=None
    "libp2p.security.pnet.protector": {"new_protected_conn": CALL},
}
ROOTS = ("multiaddr.resolvers.dns", "libp2p.discovery.mdns", "libp2p.crypto.rsa", "libp2p.crypto.secp256k1",
         "libp2p.security.pnet")

_loaded: set[str] = set()  # roots whose real modules are loaded (or loading): the finder stands aside
_lock = threading.RLock()  # mDNS callbacks run in zeroconf's thread


def _root(name: str) -> str | None:
    return next((r for r in ROOTS if name == r or name.startswith(r + ".")), None)


def real_module(name: str) -> types.ModuleType:
    """The real module `name` (loaded now if only its stand-in was)."""
    module = sys.modules.get(name)
    if module is not None and not isinstance(module, _Deferred):
        return module
    root = _root(name)
    with _lock:
        if root is not None and root not in _loaded:
            _loaded.add(root)
            for key in [k for k in sys.modules if k == root or k.startswith(root + ".")]:
                if isinstance(sys.modules[key], _Deferred):
                    del sys.modules[key]  # a stand-in: the real import below replaces it
        return importlib.import_module(name)


def deferred(name: str) -> bool:
    """True while `name` is only a stand-in (its real module not loaded)."""
    return isinstance(sys.modules.get(name), _Deferred)


def _forward(module: str, owner: str | None, name: str) -> Any:
    def forwarded(*args: Any, **kwargs: Any) -> Any:
        target = real_module(module)
        if owner is not None:
            target = getattr(target, owner)
        return getattr(target, name)(*args, **kwargs)

    forwarded.__name__ = forwarded.__qualname__ = name
    return forwarded


class _LazyInstance:
    """What a deferred class returns when called: the real instance is built on first use."""

    def __init__(self, module: str, cls: str, args: tuple, kwargs: dict) -> None:
        object.__setattr__(self, "_lazy", (module, cls, args, kwargs, []))

    def _real(self) -> Any:
        module, cls, args, kwargs, made = object.__getattribute__(self, "_lazy")
        with _lock:
            if not made:
                made.append(getattr(real_module(module), cls)(*args, **kwargs))
        return made[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)


class _DeferredClass(type):
    """Metaclass of a deferred class stand-in."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _LazyInstance(cls._module, cls.__name__, args, kwargs)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if not deferred(cls._module):
            return getattr(getattr(real_module(cls._module), cls.__name__), name)
        return _forward(cls._module, cls.__name__, name)  # a classmethod such as from_bytes

    def __instancecheck__(cls, obj: Any) -> bool:
        if isinstance(obj, _LazyInstance):
            return object.__getattribute__(obj, "_lazy")[:2] == (cls._module, cls.__name__)
        return not deferred(cls._module) and isinstance(obj, getattr(real_module(cls._module), cls.__name__))

    def __subclasscheck__(cls, sub: type) -> bool:
        return not deferred(cls._module) and issubclass(sub, getattr(real_module(cls._module), cls.__name__))


class _Deferred(types.ModuleType):
    """A deferred module's stand-in: the listed names, and the real module for any other."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(real_module(self.__name__), name)


class StandInLoader(importlib.abc.Loader):
    """Creates a stand-in module (a package, so its submodules come through the finders too); nothing runs."""

    def build(self, name: str) -> types.ModuleType:
        raise NotImplementedError

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = self.build(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _Loader(StandInLoader):
    def build(self, name: str) -> types.ModuleType:
        module = _Deferred(name)
        for attr, kind in DEFERRED.get(name, {}).items():
            if kind is CALL:
                value: Any = _forward(name, None, attr)
            elif kind is CLASS:
                value = _DeferredClass(attr, (), {"_module": name, "__module__": name})
            else:
                value = kind  # a constant
            setattr(module, attr, value)
        return module


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        root = _root(fullname)
        if root is None or root in _loaded:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)


FINDER = _Finder()
