"""Workload drivers behind one interface: process (embedded default), k3s, qemu."""
