"""RAM replication for Endophytes: the epoch protocol, throttle, buffers and handover (pure cores), page
tracking for processes (userfaultfd + PAGEMAP_SCAN) and the QEMU driver for VMs (shells)."""
