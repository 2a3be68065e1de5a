"""The network at a glance (issue 21): one JSON picture of the whole network as this node sees it
(members, links, consensus, services, storage, Endophytes), served to a local web page (web.py,
static/) and to `mycelium top`; each node's own gauges travel in its Latent spore (gauges.py) so
one node's /metrics and page can show every node.

    snapshot.py   the picture: assemble() is pure (plain data in, JSON-able dict out); gather()
                  reads it off a running node
    gauges.py     this node's gauges as a Latent `usage` entry body; the network's gauges for /metrics
    web.py        the page's HTTP server (h11 over trio TCP): static files, token-guarded JSON
    service.py    NetView: what the daemon holds (the web server, started on request)
"""
