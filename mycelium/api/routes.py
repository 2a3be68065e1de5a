"""The control API's handlers: each turns a request into a call on the running node and its answer
into a DTO. Commands that later issues fill answer 501 with a plain statement of what is missing."""

from __future__ import annotations

import time
from typing import Any

from mycelium.api import dto, protocol
from mycelium.api.server import ApiError, ControlServer, RawResponse, Request, metrics_handler
from mycelium.identity import IdentityError, TokenError, make_invite, validate_network_name

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
        except TokenError as exc:
            raise ApiError(400, "bad_token", str(exc), "ask a member for a fresh token: `mycelium invite`") from None
        except IdentityError as exc:
            raise ApiError(409, "already_member", str(exc)) from None
        return 200, {"network_id": m.network_id, "network_name": m.name}

    async def leave(_req: Request) -> tuple[int, Any]:
        m = await node.leave()
        return 200, {"network_id": m.network_id, "network_name": m.name}

    async def network_create(req: Request) -> tuple[int, Any]:
        name = _body(req).get("name")
        try:
            if not isinstance(name, str):
                raise IdentityError("network create needs a name")
            validate_network_name(name)
            m = node.create_named_network(name)
        except IdentityError as exc:
            raise ApiError(400 if "name" in str(exc) else 409, "refused", str(exc)) from None
        return 200, {"network_id": m.network_id, "network_name": m.name}

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
            spec = check_deployable(parse_manifest(text, file))
        except ManifestError as exc:
            raise ApiError(400, "invalid_manifest", str(exc), "fix the fields named above and deploy again") from None
        except ValueError as exc:  # e.g. "Endophyte is not supported yet"
            raise ApiError(400, "not_deployable", str(exc)) from None
        await node.submit_operation("deploy", spec.to_wire())
        return 202, {"service": spec.name, "status": "submitted", "version": spec.version()}

    async def undeploy(req: Request) -> tuple[int, Any]:
        name = _body(req).get("name")
        if not isinstance(name, str):
            raise ApiError(400, "bad_request", "undeploy needs a service name", "mycelium undeploy NAME")
        if name not in (node.ledger.head.services if node.ledger.head else {}):
            raise ApiError(404, "no_such_service", f"no service named {name!r} is deployed", "see `mycelium services`")
        await node.submit_operation("undeploy", name)
        return 202, {"service": name, "status": "submitted"}

    async def services(_req: Request) -> tuple[int, Any]:
        return 200, dto.services(node, runner())

    async def logs(req: Request) -> tuple[int, Any]:
        name = req.query.get("name", "")
        lines = req.query.get("lines", "200")
        if not name or not lines.isdigit():
            raise ApiError(400, "bad_request", "logs needs ?name=SERVICE and a numeric lines", "mycelium logs NAME")
        return 200, {"service": name, "node_id": node.key.node_id, "lines": await runner().logs(name, int(lines))}

    async def resolve(req: Request) -> tuple[int, Any]:
        name = req.query.get("name", "")
        if not name:
            raise ApiError(400, "bad_request", "resolve needs ?name=SERVICE", "mycelium resolve NAME")
        return 200, {"service": name, "endpoints": runner().resolve(name)}

    server.route("GET", protocol.SERVICES, services)
    server.route("POST", protocol.DEPLOY, deploy)
    server.route("POST", protocol.UNDEPLOY, undeploy)
    server.route("GET", protocol.LOGS, logs)
    server.route("GET", protocol.RESOLVE, resolve)
    from mycelium.api.storage_routes import install_storage_routes

    install_storage_routes(server, node)


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
