"""A tiny HTTP echo server for examples/echo.yaml (standard library only).

GET /health -> "ok"; GET /<text> -> "<text>" and the replica that answered; POST/PUT -> the body back.
It listens on $PORT (set by the Mycelium runtime) on all interfaces and exits cleanly on SIGTERM.
"""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = os.environ.get("ECHO_GREETING", "echo")
REPLICA = os.environ.get("MYCELIUM_INSTANCE", "local")


class Echo(BaseHTTPRequestHandler):
    def _reply(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(b"ok\n")
            return
        text = self.path.lstrip("/")
        self._reply(f"{GREETING} {text} (from {REPLICA})\n".encode())

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        self._reply(self.rfile.read(length))

    do_PUT = do_POST

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Echo)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"echo listening on port {port} as {REPLICA}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
