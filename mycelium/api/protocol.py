"""The local control API's wire contract (HTTP/1.1 + JSON over a Unix socket in the state dir).

Versioning: every /v1 request carries the header `Mycelium-Api: <API_VERSION>` and every response
carries the daemon's. A daemon answers a request of another version with 400 and an error naming
both versions, so an old CLI against a new daemon (or the reverse) says so instead of misreading.
/health, /ready and /metrics need no header (for curl and Prometheus).

Errors are JSON: {"error": {"code": str, "message": str, "hint": str}} with an HTTP status:
400 bad request, 404 unknown path, 409 refused in the current state, 500 our bug.
"""

API_VERSION = 1
VERSION_HEADER = "mycelium-api"
MAX_BODY_BYTES = 1 << 20  # deploy manifests and tokens are far smaller
REQUEST_TIMEOUT_S = 30  # a client that has not sent its whole request by then is dropped

# Paths (append-only; a removed path breaks older CLIs)
STATUS = "/v1/status"
SHUTDOWN = "/v1/shutdown"
INVITE = "/v1/invite"
JOIN = "/v1/join"
LEAVE = "/v1/leave"
NETWORK_CREATE = "/v1/network"
PEERS = "/v1/peers"
SPORES = "/v1/spores"
SERVICES = "/v1/services"
DEPLOY = "/v1/deploy"
UNDEPLOY = "/v1/undeploy"
MIGRATE = "/v1/migrate"
LOGS = "/v1/logs"
RESOLVE = "/v1/resolve"
STORAGE_PUT = "/v1/storage/put"
STORAGE_GET = "/v1/storage/get"
STORAGE_LS = "/v1/storage/ls"
STORAGE_RM = "/v1/storage/rm"
STORAGE_STATUS = "/v1/storage/status"
PRIMARY = "/v1/primary"  # the newest Primary's services and placements (read by the in-cluster manager)
NETWORK_SHOW = "/v1/network/show"
NETWORK_SET = "/v1/network/set"
ADMIN = "/v1/admin"
INVITES = "/v1/invites"
INVITE_REVOKE = "/v1/invite/revoke"
REMOVE = "/v1/remove"
NETVIEW = "/v1/netview"  # the network picture (mycelium.netview.snapshot) for `mycelium top`
UI = "/v1/ui"  # start (or find) the page's web server: its URL with the token
RELEASE_PUBLISH = "/v1/release/publish"  # self-upgrade (mycelium.release)
RELEASE_STATUS = "/v1/release/status"
HEALTH = "/health"
READY = "/ready"
METRICS = "/metrics"
