"""TLS 1.3 for the data channel: an ephemeral certificate, pinned contexts, blocking socket I/O.

Each mesh run makes one ephemeral ECDSA P-256 key and self-signed certificate (never written to
disk: loaded into OpenSSL through a memfd). Its binding to the node id is a node-key signature sent
over the admitted libp2p connection (`channel_wire.binding_payload`). Both ends then pin exactly the
peer's certificate: it is the only trust anchor of the context used for that channel, mutual TLS is
required (CERT_REQUIRED on both sides), and the DER is compared again after the handshake. TLS 1.3's
CertificateVerify proves each side holds its certificate's key, so a stripe connection is accepted
only from the node that asked for the channel over libp2p.

The acceptor's single listening context picks the per-channel context from the TLS server name
(SNI = `channel_wire.stripe_label`); an unknown name aborts the handshake.

Blocking functions here (`FrameReader.read_frames`, `send_parts`, `dial`, `accept_handshake`) run in
worker threads, one thread per socket at a time: each connection is written by one side only, so
no OpenSSL object is ever used by two threads at once.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from mycelium.mesh.channel_wire import CHUNK_BYTES, HEADER_BYTES, WireError, decode_header

READ_BYTES = 256 * 1024  # one recv (OpenSSL hands out at most one 16 KiB record per call anyway)
KEEPALIVE_IDLE_S = 10  # a silent path is probed after this …
KEEPALIVE_INTERVAL_S = 5  # … every this often …
KEEPALIVE_COUNT = 3  # … and declared dead after this many unanswered probes
USER_TIMEOUT_MS = 30_000  # unacknowledged data older than this breaks the connection (TCP_USER_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Certificate:
    der: bytes
    pem: bytes  # certificate and private key, PEM; lives only in memory


def make_certificate() -> Certificate:
    """A fresh ephemeral key and self-signed certificate (valid 2000–9999: pinned, so clocks do not matter)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mycelium data channel")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2000, 1, 1))
        .not_valid_after(datetime.datetime(9999, 12, 31))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Certificate(cert.public_bytes(serialization.Encoding.DER), pem)


def _load_own(ctx: ssl.SSLContext, cert: Certificate) -> None:
    """`load_cert_chain` wants a path; give it an anonymous in-memory file (or a private temp file)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mycelium-datachannel", os.MFD_CLOEXEC)
        try:
            os.write(fd, cert.pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:  # created 0700
        path = os.path.join(tmp, "key.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(cert.pem)
        ctx.load_cert_chain(path)


def _base(server: bool, own: Certificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the server name is a channel label; identity is the pinned certificate
    ctx.verify_mode = ssl.CERT_REQUIRED
    if server:
        ctx.num_tickets = 0  # no resumption: every connection authenticates with its certificate
    _load_own(ctx, own)
    return ctx


def pinned_context(server: bool, own: Certificate, peer_der: bytes) -> ssl.SSLContext:
    """A context that trusts exactly `peer_der` and presents `own`."""
    ctx = _base(server, own)
    ctx.load_verify_locations(cadata=peer_der)
    return ctx


def listening_context(own: Certificate, choose: Callable[[str | None], ssl.SSLContext | None]) -> ssl.SSLContext:
    """The acceptor's context: `choose(server_name)` returns the pinned per-channel context, or None
    to abort the handshake."""
    ctx = _base(True, own)

    def on_server_name(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        chosen = choose(name)
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        sock.context = chosen
        sock.mycelium_label = name  # type: ignore[union-attr]  # read back by accept_handshake
        return None

    ctx.sni_callback = on_server_name
    return ctx


def tune(sock: socket.socket) -> None:
    """No Nagle (we batch ourselves); keepalive and a user timeout so a dead path errors, not hangs."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                       ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


def dial(host: str, port: int, ctx: ssl.SSLContext, label: str, peer_der: bytes, timeout_s: float) -> ssl.SSLSocket:
    """(blocking) Connect, handshake as client asking for `label`, check the pinned certificate."""
    raw = socket.create_connection((host, port), timeout=timeout_s)
    try:
        tune(raw)
        tls = ctx.wrap_socket(raw, server_hostname=label)
    except BaseException:
        raw.close()
        raise
    try:
        if tls.getpeercert(binary_form=True) != peer_der:
            raise ssl.SSLError("the peer presented another certificate than the one it signed")
        tls.settimeout(None)
    except BaseException:
        tls.close()
        raise
    return tls


def accept_handshake(raw: socket.socket, ctx: ssl.SSLContext, timeout_s: float) -> tuple[ssl.SSLSocket, str | None]:
    """(blocking) Server side of one stripe's handshake with the listening context; returns the
    socket and the server name the client asked for (recorded by the SNI callback)."""
    raw.settimeout(timeout_s)
    tune(raw)
    tls = ctx.wrap_socket(raw, server_side=True)
    tls.settimeout(None)
    return tls, getattr(tls, "mycelium_label", None)


def send_parts(sock: ssl.SSLSocket, parts: list[bytes | memoryview]) -> None:
    """(blocking) Write every part in order."""
    for part in parts:
        sock.sendall(part)


class FrameReader:
    """(blocking) Reads chunks off one TLS connection; used by one thread at a time."""

    def __init__(self, sock: ssl.SSLSocket, *, tag: int = 0) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._tag = tag  # the inner layer's tag on sealed chunks (PQ), 0 for classic channels

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            data = self._sock.recv(READ_BYTES)
            if not data:
                raise EOFError("the connection ended")
            self._buf += data

    def read_frames(self, max_bytes: int = 4 * CHUNK_BYTES) -> list[tuple[int, int, bytes]]:
        """At least one chunk (blocking), plus any more already received, up to `max_bytes`."""
        frames: list[tuple[int, int, bytes]] = []
        total = 0
        while total < max_bytes:
            if frames and len(self._buf) < HEADER_BYTES:
                break
            self._fill(HEADER_BYTES)
            seq, flags, length = decode_header(self._buf[:HEADER_BYTES], self._tag)
            have = len(self._buf) - HEADER_BYTES
            if have >= length:
                payload = bytes(self._buf[HEADER_BYTES : HEADER_BYTES + length])
                del self._buf[: HEADER_BYTES + length]
            elif frames:
                break  # do not block on a partial chunk while we have whole ones to hand over
            else:
                payload = self._read_payload(length)
            frames.append((seq, flags, payload))
            total += length + HEADER_BYTES
        return frames

    def _read_payload(self, length: int) -> bytes:
        out = bytearray(length)
        view = memoryview(out)
        have = len(self._buf) - HEADER_BYTES
        view[:have] = self._buf[HEADER_BYTES:]
        self._buf.clear()
        pos = have
        while pos < length:
            n = self._sock.recv_into(view[pos:], length - pos)
            if not n:
                raise EOFError(f"the connection ended inside a chunk ({pos} of {length} bytes)")
            pos += n
        return bytes(out)


__all__ = ["Certificate", "FrameReader", "WireError", "accept_handshake", "dial", "listening_context",
           "make_certificate", "pinned_context", "send_parts", "tune"]
