"""The WireGuard overlay K3s runs on: deterministic addresses, keys published in Latent spores,
the desired peer set (pure), and the shell that applies it with wireguard-go or kernel WireGuard.

    addressing.py  overlay address and pod CIDR of every member, a pure function of the Primary
    peers.py       the overlay Latent entry (public key, endpoint) and the desired peer set (pure)
    keys.py        the node's WireGuard key in its state dir (0600)
    wireguard.py   applies a desired overlay to a WireGuard interface (wireguard-go + wg, or kernel)
"""
