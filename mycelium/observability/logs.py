"""structlog setup: JSON lines to files/journald, human-readable on a terminal; every line carries
the node id and network id. Standard-library loggers (py-libp2p's among them) go through the same
renderer, so nothing bypasses the format."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO


def _import_structlog() -> Any:
    """structlog, imported without rich: when rich is installed, `structlog.dev` imports it (3.8 MiB of
    RSS and ~30 ms here, measured) only to draw tracebacks on a terminal. The daemon logs JSON, the
    console renderer falls back to plain tracebacks, and the CLI imports rich itself when it draws."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog
        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog


structlog = _import_structlog()

_static: dict[str, Any] = {}  # fields added to every line (node, network), set by `bind_identity`


def _add_static(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in _static.items():
        event.setdefault(key, value)
    return event


def bind_identity(**fields: Any) -> None:
    """Set fields (node=…, network=…, epoch=…) carried by every later log line."""
    _static.update({k: v for k, v in fields.items() if v is not None})


def configure_logging(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    shared = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_static,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info, renderer],
        foreign_pre_chain=shared,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def tame_library_loggers() -> None:
    """Route py-libp2p's logger (which it rewires on import) back into ours, at WARNING."""
    for name in ("libp2p", "multiaddr", "async_service"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
        lib.setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
