"""The control API's handlers: each turns a request into a call on the running node and its answer
into a DTO. Commands that later issues fill answer 501 with a plain statement of what is missing."""

from __future__ import annotations

import time
from typing import Any

from mycelium.api import dto, protocol
from mycelium.api.server import ApiError, ControlServer, RawResponse, Request, metrics_handler
from mycelium.identity import IdentityError, InvalidName, TokenError, make_invite, validate_network_name

MAX_INVITE_TTL_S = 30 * 24 * 3600  # a leaked token is a standing key to the network: keep them short
MAX_INVITE_USES = 1000


def install_routes(server: ControlServer, node: Any) -> None:
    async def status(_req: Request) -> tuple[int, Any]:
        return 200, dto.status(node)

    async def health(_req: Request) -> tuple[int, Any]:
        return 200, {"status": "ok"}

    async def ready(_req: Request) -> tuple[int, Any]:
        if node.ready:
            return 200, {"status": "ready"}
        return 503, {"status": "starting"}

    async def shutdown(_req: Request) -> tuple[int, Any]:
        node.shutdown()
        return 202, {"status": "stopping"}

    async def invite(req: Request) -> tuple[int, Any]:
        body = _body(req)
        ttl_s = _int_field(body, "ttl_s", 3600, 1, MAX_INVITE_TTL_S)
        uses = _int_field(body, "uses", 1, 1, MAX_INVITE_USES)
        if not node.ledger.is_member(node.key.node_id):
            raise ApiError(409, "not_admitted", "this node is not (yet) a member of its network, so it cannot invite",
                           "ask an admitted member to run `mycelium invite`")
        if not node.addresses():
            # while the network session (re)starts — just after `network create` — the node listens
            # nowhere, and a token without an address leaves the joiner with nobody to dial, silently
            raise ApiError(503, "starting", "the node's network session is not running yet, so an invite would "
                           "carry no address to dial", "retry in a moment")
        now_s = int(time.time())
        inv = make_invite(node.key, node.membership.network_id, ttl_s=ttl_s, uses=uses, now_s=now_s)
        node.db.add_invite(inv.invite_id, inv.network_id, inv.expires_s, inv.uses, now_s)
        token = node.make_token(inv)
        return 200, {"token": token, "expires_s": inv.expires_s, "uses": uses,
                     "network_name": node.membership.name, "bootstrap": list(node.addresses())}

    async def join(req: Request) -> tuple[int, Any]:
        token = _body(req).get("token")
        if not isinstance(token, str):
            raise ApiError(400, "bad_request", "join needs a token string", "mycelium join TOKEN")
        try:
            m = node.join(token)
        except TokenError:
            raise  # mapped by type (mycelium.api.errors): 400 bad_token
        except IdentityError as exc:  # the only other refusal of a join: this node is in another network
            raise ApiError(409, "already_member", str(exc)) from None
        return 200, {"network_id": m.network_id, "network_name": m.name}

    async def leave(_req: Request) -> tuple[int, Any]:
        m = await node.leave()
        return 200, {"network_id": m.network_id, "network_name": m.name}

    async def network_create(req: Request) -> tuple[int, Any]:
        name, pq = _body(req).get("name"), _body(req).get("pq", False)
        if not isinstance(name, str):
            raise InvalidName("network create needs a name")
        if not isinstance(pq, bool):
            raise InvalidName("network create: pq must be true or false")
        validate_network_name(name)  # InvalidName: 400; other IdentityErrors: 409 (mycelium.api.errors)
        m = node.create_named_network(name, pq=pq)
        return 200, {"network_id": m.network_id, "network_name": m.name,
                     "signature_scheme": m.genesis.scheme.value}

    from mycelium.api.governance_routes import install_governance_routes

    install_governance_routes(server, node)
    from mycelium.api.release_routes import install_release_routes

    install_release_routes(server, node)
    server.route("GET", protocol.STATUS, status)
    server.route("GET", protocol.HEALTH, health)
    server.route("GET", protocol.READY, ready)
    server.route("GET", protocol.METRICS, metrics_handler(node.metrics))
    server.route("POST", protocol.SHUTDOWN, shutdown)
    server.route("POST", protocol.INVITE, invite)
    server.route("POST", protocol.JOIN, join)
    server.route("POST", protocol.LEAVE, leave)
    server.route("POST", protocol.NETWORK_CREATE, network_create)
    async def peers(_req: Request) -> tuple[int, Any]:
        return 200, dto.peers(node)

    async def spores(req: Request) -> tuple[int, Any]:
        kind = req.query.get("kind")
        if kind not in (None, "primary", "seed", "latent"):
            raise ApiError(400, "bad_request", f"unknown spore kind {kind!r}", "use primary, seed or latent")
        return 200, dto.spores(node, kind)

    server.route("GET", protocol.PEERS, peers)
    server.route("GET", protocol.SPORES, spores)
    def runner():
        session = node.session
        workloads = getattr(session, "workloads", None) if session else None
        if workloads is None:
            raise ApiError(503, "starting", "the node's network session is not running yet", "retry in a moment")
        return workloads

    async def deploy(req: Request) -> tuple[int, Any]:
        from mycelium.runtime.manifest import ManifestError, check_deployable, parse_manifest

        body = _body(req)
        text, file = body.get("manifest"), body.get("file", "<manifest>")
        if not isinstance(text, str) or not isinstance(file, str):
            raise ApiError(400, "bad_request", "deploy needs the manifest text", "mycelium deploy FILE")
        try:
            parsed = parse_manifest(text, file)
            lease = getattr(parsed, "kind", "") == "Endophyte"  # process or VM: a lease (ram/leases.py)
            spec = None if lease else check_deployable(parsed)
        except ManifestError as exc:
            raise ApiError(400, "invalid_manifest", str(exc), "fix the fields named above and deploy again") from None
        except ValueError as exc:  # e.g. "Endophyte is not supported yet"
            raise ApiError(400, "not_deployable", str(exc)) from None
        if spec is not None and spec.volumes:
            from mycelium.storage.workload_mounts import deploy_refusal

            session = node.session
            why = deploy_refusal(spec.volumes, node.ledger.head, getattr(session, "storage", None),
                                 getattr(session, "storage_unavailable", None))
            if why is not None:
                raise ApiError(409, "volume_unavailable", *why)
        if spec is None:
            await node.submit_operation("endophyte", {"action": "deploy", "name": parsed.name, "spec": parsed.spec})
            return 202, {"service": parsed.name, "status": "submitted", "kind": "Endophyte", "version": parsed.version()}
        await node.submit_operation("deploy", spec.to_wire())
        return 202, {"service": spec.name, "status": "submitted", "version": spec.version()}

    async def undeploy(req: Request) -> tuple[int, Any]:
        name = _body(req).get("name")
        if not isinstance(name, str):
            raise ApiError(400, "bad_request", "undeploy needs a service name", "mycelium undeploy NAME")
        endophytes = node.ledger.head.params.get("endophytes", {}) if node.ledger.head else {}
        if name in endophytes:
            await node.submit_operation("endophyte", {"action": "undeploy", "name": name})
            return 202, {"service": name, "status": "submitted"}
        if name not in (node.ledger.head.services if node.ledger.head else {}):
            raise ApiError(404, "no_such_service", f"no service named {name!r} is deployed", "see `mycelium services`")
        await node.submit_operation("undeploy", name)
        return 202, {"service": name, "status": "submitted"}

    async def services(_req: Request) -> tuple[int, Any]:
        res = dto.services(node, runner())
        endophytes = getattr(node.session, "endophytes", None) if node.session else None
        res["endophytes"] = endophytes.rows() if endophytes is not None else []
        return 200, res

    async def migrate(req: Request) -> tuple[int, Any]:
        body = _body(req)
        name, to = body.get("name"), body.get("to")
        if not isinstance(name, str) or not isinstance(to, str) or not to:
            raise ApiError(400, "bad_request", "migrate needs a name and a target node", "mycelium migrate NAME --to NODE")
        rec = (node.ledger.head.params.get("endophytes", {}) if node.ledger.head else {}).get(name)
        if rec is None:
            raise ApiError(404, "no_such_endophyte", f"no Endophyte named {name!r} is deployed", "see `mycelium services`")
        matches = [b for b in rec["backups"] if b == to or b.endswith(to)]
        if len(matches) != 1:
            raise ApiError(409, "not_a_backup", f"{to!r} names {len(matches)} of {name}'s backups; the target must be "
                           "exactly one of them (it already holds the replicated state)",
                           f"pick one of: {', '.join(b[-8:] for b in rec['backups'])}")
        await node.submit_operation("endophyte", {"action": "migrate", "name": name, "to": matches[0]})
        return 202, {"service": name, "status": "submitted", "to": matches[0]}

    async def logs(req: Request) -> tuple[int, Any]:
        name = req.query.get("name", "")
        lines = req.query.get("lines", "200")
        if not name or not lines.isdigit():
            raise ApiError(400, "bad_request", "logs needs ?name=SERVICE and a numeric lines", "mycelium logs NAME")
        where = req.query.get("node", "")
        if where:  # a replica on another member: asked over the mesh (mycelium.runtime.remote_logs)
            from mycelium.runtime.remote_logs import fetch

            runner()  # 503 while the session starts
            node_id, got = await fetch(node.session, where, name, int(lines))
            return 200, {"service": name, "node_id": node_id, "lines": got}
        return 200, {"service": name, "node_id": node.key.node_id, "lines": await runner().logs(name, int(lines))}

    async def resolve(req: Request) -> tuple[int, Any]:
        name = req.query.get("name", "")
        if not name:
            raise ApiError(400, "bad_request", "resolve needs ?name=SERVICE", "mycelium resolve NAME")
        return 200, {"service": name, "endpoints": runner().resolve(name)}

    server.route("GET", protocol.SERVICES, services)
    server.route("POST", protocol.DEPLOY, deploy)
    server.route("POST", protocol.UNDEPLOY, undeploy)
    server.route("POST", protocol.MIGRATE, migrate)
    server.route("GET", protocol.LOGS, logs)
    server.route("GET", protocol.RESOLVE, resolve)
    from mycelium.api.storage_routes import install_storage_routes

    install_storage_routes(server, node)
    from mycelium.api.netview_routes import install_netview_routes

    install_netview_routes(server, node)

    async def primary(_req: Request) -> tuple[int, Any]:
        head = node.ledger.head
        if head is None:
            raise ApiError(503, "no_primary", "this node holds no Primary yet", "retry once it has caught up")
        return 200, {"height": head.height, "services": head.services, "placements": head.placements}

    server.route("GET", protocol.PRIMARY, primary)


def _body(req: Request) -> dict:
    if req.body is None:
        return {}
    if not isinstance(req.body, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    return req.body


def _int_field(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


__all__ = ["install_routes", "RawResponse"]
