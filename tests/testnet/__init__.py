"""Testnet harness: N real daemons, each optionally in its own network namespace, with perturbations
(kill -9, SIGSTOP/SIGCONT, graceful restart, partition/heal, bandwidth limits, netem where the kernel
has it, disk full, clock skew) and a history checker that fails any run with a fork.

Public interface:

    from tests.testnet.cluster import Testnet, NetDaemon, FAST_ENV, NETNS_PORT, free_port, wait_seconds
    from tests.testnet.netns import Netns, NetnsUnavailable, netns_unavailable_reason, netem_unavailable_reason
    from tests.testnet.history import HistoryChecker, History, read_chain, wait_for
    from tests.testnet.faults import clock_skew_env, small_tmpfs, fill_disk, tmpfs_unavailable_reason

    with Testnet(4, netns=True, spare=2, node_env={3: clock_skew_env(8, tmp)}) as net:
        net.form(validators=4)                    # founder creates a network, the rest join by invite
        net.kill(1); net.restart(1)               # kill -9, then `up` on the same state dir and port
        net.pause(2); net.resume(2)               # SIGSTOP / SIGCONT of the process group
        net.stop_gracefully(3); net.restart(3)    # `mycelium down` / `up`
        net.partition([0, 1, 2], [3]); net.heal() # blackhole routes between the groups' namespaces
        net.net.throttle(1, rate_kbit=256)        # tc tbf; net.net.delay(...) needs sch_netem
        net.wait_progress([0, 1, 2], beyond=h); net.wait_converged()
        net.history.check()                       # no fork, no head went back (stored chains too)

Environment: root (or CAP_NET_ADMIN) and iproute2 for namespaces; otherwise everything runs on
loopback and namespace-only tests skip with the reason. MYCELIUM_TEST_NO_NETNS=1 forces loopback.
"""
