"""Logs and metrics shared by every layer (imports nothing else of mycelium).

logs.py     structlog setup: JSON lines, node and network id on every line, libp2p's loggers tamed
metrics.py  NodeMetrics: one Prometheus registry per node, served by the control API at /metrics
"""
