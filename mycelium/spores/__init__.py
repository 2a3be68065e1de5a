"""Spore data model, codec, validation, merge and limits (pure, no I/O) + the Latent shell.

entry.py       signed Latent entries (typed, keyed by observer/subject, per-author versions)
validation.py  validate-first: drop reasons, counting, trust reports
latent.py      the bounded Latent CRDT store (merge laws proven in its docstring and tests)
gossip.py      sans-IO anti-entropy core (digests, range requests, deltas)
primary.py     Primary spores: the certified hash chain from genesis
chain.py       the node's bounded Primary chain and the sans-IO catch-up core
seed.py        Seed spores and the authority order Primary > Seed > Latent
report.py      JSON-ready descriptions for `mycelium spores --json`
certificate.py quorum certificates (shared with consensus)
latent_exchange.py  the Latent spore over the mesh (trio shell around LatentGossip)
(Test helpers: mycelium.testing.spores.)
"""
