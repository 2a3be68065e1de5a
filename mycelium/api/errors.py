"""Each layer raises its own error types; this is the one place that says which HTTP status (and
machine code) each of them becomes. Handlers raise; the server asks `api_error(exc)`; nothing ever
chooses a status by matching an error's text.

The table is looked up along the exception's class hierarchy, most specific type first, so a new
subclass inherits its parent's status until it is given its own row. An error the table does not
know is our bug: the server answers 500 and logs the traceback.
"""

from __future__ import annotations

from functools import lru_cache

from mycelium.api.server import ApiError


@lru_cache(maxsize=1)
def _table() -> dict[type, tuple[int, str, str]]:
    # imported here: the layers below import nothing from the API, and the daemon imports the server
    from mycelium.daemon import NoPrimaryYet, SessionNotRunning
    from mycelium.identity import IdentityError, InvalidName, TokenError
    from mycelium.ledger.operations import NotAuthorized, OperationError
    from mycelium.roles.readonly import ReadOnlyMode
    from mycelium.runtime.remote_logs import NodeNotFound, NodeUnreachable
    from mycelium.runtime.runner import NoSuchReplica, ReplicaElsewhere

    return {
        SessionNotRunning: (503, "starting", "retry in a moment"),
        NoPrimaryYet: (409, "not_admitted", "wait for it to catch up"),
        ReadOnlyMode: (409, "read_only", "`mycelium status` shows when the quorum is back"),
        NotAuthorized: (403, "refused", ""),
        OperationError: (409, "refused", ""),
        TokenError: (400, "bad_token", "ask a member for a fresh token: `mycelium invite`"),
        InvalidName: (400, "refused", ""),
        IdentityError: (409, "refused", ""),
        NoSuchReplica: (404, "no_such_service", "see `mycelium services` for where it runs"),
        ReplicaElsewhere: (404, "not_here", "run `mycelium logs NAME --node ID` with one of those nodes"),
        NodeNotFound: (404, "no_such_member", ""),
        NodeUnreachable: (409, "unreachable", ""),
    }


def api_error(exc: BaseException) -> ApiError | None:
    """The API's answer to `exc`, or None when no layer declared it (then it is a bug: 500)."""
    table = _table()
    for kind in type(exc).__mro__:
        row = table.get(kind)
        if row is not None:
            status, code, hint = row
            return ApiError(status, code, str(exc), getattr(exc, "hint", "") or hint)
    return None
