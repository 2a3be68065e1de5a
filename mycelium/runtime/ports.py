"""Ports for a process instance: fixed ports are checked free, port 0 gets a free one from the kernel.

A free port is found by binding port 0 and closing the socket; another program could take it before
the instance binds it (the instance then fails and is restarted with the same port — rare on a node,
and the restart policy covers it). Ports handed to other instances of this driver are never reused.
"""

from __future__ import annotations

import socket

from mycelium.runtime.driver import DriverError, PortInUse
from mycelium.runtime.spec import ServiceSpec

FREE_PORT_TRIES = 64


def assign_ports(service: ServiceSpec, taken: set[int], host: str) -> dict[str, int]:
    """Port name -> number; PortInUse (saying what to do) for a fixed port that is not free."""
    ports: dict[str, int] = {}
    for port in service.ports:
        if port.port:
            if port.port in taken or not bindable(host, port.port):
                raise PortInUse(
                    f"port {port.port} ({port.name}) of service {service.name} is already in use on "
                    f"this machine; stop what listens there (see `ss -ltnp 'sport = :{port.port}'`) or "
                    f"set `port: 0` in the manifest so the runtime picks a free port")
            ports[port.name] = port.port
        else:
            ports[port.name] = free_port(host, taken | set(ports.values()))
    return ports


def bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, avoid: set[int]) -> int:
    for _ in range(FREE_PORT_TRIES):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise DriverError(f"no free port after {FREE_PORT_TRIES} tries; is the ephemeral port range exhausted?")
