"""A local HTTP proxy, as a corporate egress proxy behaves: CONNECT tunnels and forwarding.

``CONNECT host:port`` opens a tunnel (TLS to an https:// upstream passes through it
untouched); a request with an absolute URL (``POST http://host:port/path``) is forwarded,
its answer relayed as it arrives (chunked, so streams stay streams), on a keep-alive
connection. With ``credentials`` set, requests without the matching Basic
``Proxy-Authorization`` get 407. Everything it did is recorded: ``tunnels`` (the
CONNECT targets), ``forwarded`` (absolute URLs), ``auth`` (Proxy-Authorization values
seen), ``connections`` (client connections accepted). It only ever connects to 127.0.0.1
or localhost; anything else is answered 403.
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
LOCAL = {"127.0.0.1", "localhost"}


class ProxyServer:
    """Start with ``with ProxyServer() as proxy:``; ``proxy.url`` is what HTTPS_PROXY names."""

    def __init__(self, credentials: tuple[str, str] | None = None):
        self.credentials = credentials
        self.tunnels: list[str] = []
        self.forwarded: list[str] = []
        self.auth: list[str | None] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> ProxyServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with owner._lock:
                    owner.connections += 1

            def _authorized(self) -> bool:
                given = self.headers.get("Proxy-Authorization")
                with owner._lock:
                    owner.auth.append(given)
                if owner.credentials is None:
                    return True
                expected = "Basic " + base64.b64encode(":".join(owner.credentials).encode()).decode()
                if given == expected:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self):
                host, _, port = self.path.rpartition(":")
                if not self._authorized():
                    return
                if host not in LOCAL:
                    self.send_error(403)
                    return
                with owner._lock:
                    owner.tunnels.append(self.path)
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                _pipe(self.connection, upstream)
                self.close_connection = True

            def _forward(self):
                if not self._authorized():
                    return
                parts = urlsplit(self.path)
                if parts.hostname not in LOCAL:
                    self.send_error(403)
                    return
                with owner._lock:
                    owner.forwarded.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                try:
                    upstream.request(self.command, path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while data := answer.read1(65536):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                finally:
                    upstream.close()

            do_GET = do_POST = _forward

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([a, b], [], [], 30)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()
