"""Testnet harness: N real daemons, each optionally in its own network namespace, with perturbations
(kill -9, SIGSTOP/SIGCONT, graceful restart, partition/heal, bandwidth limits, netem where the kernel
has it, disk full, clock skew) and a history checker that fails any run with a fork.

Public interface:

    from tests.testnet.cluster import Testnet, NetDaemon, FAST_ENV
    from tests.testnet.netns import Netns, NetnsUnavailable, netns_unavailable_reason, netem_unavailable_reason
    from tests.testnet.history import HistoryChecker, History, read_chain, wait_for
    from tests.testnet.faults import clock_skew_env, small_tmpfs, fill_disk
"""
