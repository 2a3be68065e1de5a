"""The trimmed py-libp2p import: unused parts are stand-ins that fail loudly; the mesh works with it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mycelium.mesh.host  # noqa: F401 - imports libp2p through the trim
from mycelium.mesh import libp2p_trim


def test_unused_parts_are_not_loaded():
    assert "aioquic" not in sys.modules or libp2p_trim.trimmed("aioquic")  # dnspython, once loaded, imports it
    assert libp2p_trim.trimmed("libp2p.transport.quic")
    assert not libp2p_trim.trimmed("libp2p.stream_muxer.yamux.yamux")  # what we use is the real thing


def test_a_stand_in_refuses_to_work_and_says_why():
    from libp2p.transport.quic.transport import QUICTransport

    with pytest.raises(RuntimeError, match="disabled in mycelium"):
        QUICTransport()
    from libp2p.transport.quic.utils import is_quic_multiaddr

    assert is_quic_multiaddr("/ip4/127.0.0.1/udp/1/quic-v1") is False  # the honest answer without QUIC


def test_functions_libp2p_calls_at_run_time_give_real_answers():
    from libp2p.host.basic_host import is_private_ip  # what basic_host itself calls

    assert is_private_ip("192.168.1.5") and is_private_ip("10.0.0.1") and not is_private_ip("8.8.8.8")
    from libp2p.bitswap.cid import parse_cid  # the DHT parses CIDs with it: not trimmed

    assert callable(parse_cid) and not libp2p_trim.trimmed("libp2p.bitswap.cid")


def test_exception_stand_ins_are_exceptions():
    from libp2p.relay.circuit_v2 import SomeRelayError

    assert issubclass(SomeRelayError, Exception)


def test_full_import_can_be_forced():
    code = "import sys, mycelium.mesh.host; print('aioquic.quic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"MYCELIUM_FULL_LIBP2P": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_general_purpose_libraries_stay_real():
    """The trim is process-wide: requests (used by the kubernetes client) must stay the real module."""
    code = ("import mycelium.mesh.libp2p_setup, libp2p, requests, sys; "
            "from mycelium.mesh.libp2p_trim import trimmed; "
            "assert not trimmed('requests') and requests.__version__, 'requests was stubbed'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "MYCELIUM_FULL_LIBP2P"})
    assert res.returncode == 0, res.stderr[-2000:]
