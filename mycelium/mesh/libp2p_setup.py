"""Import py-libp2p once, then undo what its import does to logging.

`import libp2p` runs `setup_logging()`, which detaches the `libp2p` logger from the root logger
(propagate=False, handlers cleared). Every mesh module that uses libp2p imports this module first,
so libp2p's records flow into our structlog handlers at WARNING (`mycelium.observability.logs`).
A few libp2p loggers report, at ERROR, conditions the mesh expects, handles and counts itself (a
redial to a node that is down, a plain libp2p peer declining our protocols); they are raised to
CRITICAL unless LIBP2P_DEBUG is set for a debugging session.
It also installs `mycelium.mesh.libp2p_trim` first, so the parts of py-libp2p we never use stay unloaded.
"""

from __future__ import annotations

import logging
import os

from mycelium.mesh import libp2p_trim

libp2p_trim.install()  # before the first libp2p import: QUIC, AutoTLS, relay … are never loaded

import libp2p  # noqa: E402,F401 - the import that rewires logging

from mycelium.observability.logs import tame_library_loggers

EXPECTED_ERROR_LOGGERS = (
    "libp2p.transport.tcp.tcp",  # "Failed to open TCP stream" on every failed redial
    "libp2p.protocol_muxer.multiselect_client",  # a peer declining a protocol
    "libp2p.host.basic_host",  # "Failed to open stream" for the same
)

tame_library_loggers()
if not os.environ.get("LIBP2P_DEBUG"):
    for _name in EXPECTED_ERROR_LOGGERS:
        logging.getLogger(_name).setLevel(logging.CRITICAL)
