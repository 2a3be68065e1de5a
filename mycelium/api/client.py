"""Control API client (synchronous: the CLI does one request at a time).

Distinguishes the three ways a daemon can be absent, because the CLI's exit code depends on it:
no socket / connection refused → DaemonNotRunning (exit 3); a socket that does not answer in time or
answers gibberish → DaemonUnreachable (exit 4); a proper refusal → ApiError with the daemon's message.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

from mycelium.api import protocol


class ClientError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


class DaemonNotRunning(ClientError):
    exit_code = 3


class DaemonUnreachable(ClientError):
    exit_code = 4


class ApiError(ClientError):
    exit_code = 1

    def __init__(self, status: int, code: str, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status, self.code = status, code
        # 4xx: the request was bad or refused in this state (usage / bad input); 5xx: unknown state
        self.exit_code = 2 if 400 <= status < 500 or status == 501 else 4


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


STARTING_WAIT_S = 30.0  # how long a request waits out a network session that is (re)starting


class ControlClient:
    def __init__(self, socket_path: Path, *, timeout_s: float = 10.0, starting_wait_s: float = STARTING_WAIT_S) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        # The daemon answers 503 "starting" while its network session (re)starts — right after
        # `network create`/`join`, or a session restart — and refuses before changing anything, so
        # asking again is safe: `mycelium network create x && mycelium network set …` just works.
        self.starting_wait_s = starting_wait_s

    def _not_running(self) -> DaemonNotRunning:
        state_dir = self.socket_path.parent
        return DaemonNotRunning(
            f"no mycelium daemon is running for state dir {state_dir}",
            f"start one with `mycelium --state-dir {state_dir} up --detach` (or `./install.sh`)",
        )

    def request(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        """Send a request and return the decoded answer (JSON, or bytes for non-JSON replies); a 503
        "starting" is asked again for up to `starting_wait_s`, then raised."""
        deadline = time.monotonic() + self.starting_wait_s
        pause = 0.1
        while True:
            try:
                return self._request_once(method, path, body, timeout_s=timeout_s)
            except ApiError as exc:
                if exc.status != 503 or exc.code != "starting" or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _request_once(self, method: str, path: str, body: Any, *, timeout_s: float | None) -> Any:
        if not self.socket_path.exists():
            raise self._not_running()
        conn = _UnixConnection(self.socket_path, timeout_s or self.timeout_s)
        data = None if body is None else json.dumps(body).encode()
        headers = {protocol.VERSION_HEADER: str(protocol.API_VERSION)}
        if data is not None:
            headers["content-type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (ConnectionRefusedError, FileNotFoundError):
            raise self._not_running() from None
        except socket.timeout:
            raise DaemonUnreachable(
                f"the daemon at {self.socket_path} did not answer within {timeout_s or self.timeout_s:.0f} s",
                "it may be overloaded or stuck; check daemon.log in the state dir, or restart it "
                "(`mycelium down` then `mycelium up --detach`)",
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                raise self._not_running() from None
            raise DaemonUnreachable(f"cannot talk to the daemon at {self.socket_path}: {exc}",
                                    "check the state dir's permissions and daemon.log") from None
        except http.client.HTTPException as exc:
            raise DaemonUnreachable(f"the daemon at {self.socket_path} sent a broken answer: {exc}",
                                    "check daemon.log in the state dir") from None
        finally:
            conn.close()
        version = resp.getheader(protocol.VERSION_HEADER)
        if version is not None and version != str(protocol.API_VERSION):
            raise ApiError(400, "version_mismatch",
                           f"this CLI speaks control API version {protocol.API_VERSION}, the daemon speaks {version}",
                           "run the `mycelium` that came with the daemon, or reinstall with ./install.sh")
        if resp.getheader("content-type", "").startswith("application/json"):
            try:
                obj = json.loads(payload)
            except ValueError:
                raise DaemonUnreachable("the daemon answered malformed JSON", "check daemon.log") from None
        else:
            obj = payload
        if resp.status >= 400:
            err = obj.get("error", {}) if isinstance(obj, dict) else {}
            raise ApiError(resp.status, err.get("code", "error"), err.get("message", f"HTTP {resp.status}"),
                           err.get("hint", ""))
        return obj

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, **kw)
