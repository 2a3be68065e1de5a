"""Claiming the listen port before py-libp2p binds it.

py-libp2p 0.8.1 opens TCP listeners with SO_REUSEPORT (for hole punching), so a second daemon on
the same port does *not* fail: both bind and the kernel splits incoming connections between them.
We probe each fixed port with a plain socket first; a taken port is an error, or (fallback) is
replaced by an ephemeral one with a warning.
"""

from __future__ import annotations

import errno
import socket

import multiaddr


class PortTaken(Exception):
    """A fixed listen port is already in use; the message says what to do."""


def port_in_use(host: str, port: int, family: int) -> bool:
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        probe.close()
    return False


def claim_listen_addresses(listen: tuple[str, ...], *, fallback: bool) -> tuple[list[str], list[str]]:
    """(addresses to listen on, warnings). Raises PortTaken when a port is taken and not `fallback`."""
    out, warnings = [], []
    for text in listen:
        addr = multiaddr.Multiaddr(text)
        protocols = [p.name for p in addr.protocols()]
        if "tcp" not in protocols or not ({"ip4", "ip6"} & set(protocols)):
            out.append(text)
            continue
        ip_proto = "ip4" if "ip4" in protocols else "ip6"
        host, port = addr.value_for_protocol(ip_proto), int(addr.value_for_protocol("tcp"))
        family = socket.AF_INET if ip_proto == "ip4" else socket.AF_INET6
        if port == 0 or not port_in_use(host, port, family):
            out.append(text)
            continue
        if not fallback:
            raise PortTaken(
                f"TCP port {port} on {host} is already in use (another mycelium daemon?); stop it, or "
                f"choose another port with --listen /{ip_proto}/{host}/tcp/PORT"
            )
        out.append(f"/{ip_proto}/{host}/tcp/0")
        warnings.append(f"TCP port {port} on {host} is taken; listening on an ephemeral port instead")
    return out, warnings


def interface_addresses() -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) addresses of this machine's interfaces, loopback and link-local excluded."""
    import ipaddress

    import psutil

    v4, v6 = [], []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            try:
                ip = ipaddress.ip_address(a.address.split("%")[0])
            except ValueError:
                continue  # MAC addresses and the like
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                continue
            (v4 if ip.version == 4 else v6).append(str(ip))
    return v4, v6


def advertised_addresses(bound: list[str], ipv4: list[str], ipv6: list[str]) -> list[str]:
    """What others can dial: each wildcard (0.0.0.0 / ::) bound address becomes one per interface
    address; with no other interface, loopback stands in (a single-machine setup)."""
    out: list[str] = []
    for text in bound:
        if text.startswith("/ip4/0.0.0.0/"):
            rest = text[len("/ip4/0.0.0.0") :]
            out.extend(f"/ip4/{ip}{rest}" for ip in (ipv4 or ["127.0.0.1"]))
        elif text.startswith("/ip6/::/"):
            rest = text[len("/ip6/::") :]
            out.extend(f"/ip6/{ip}{rest}" for ip in (ipv6 or ["::1"]))
        else:
            out.append(text)
    return list(dict.fromkeys(out))
