"""An MTA-STS policy host (RFC 8461 §3.3) on loopback: HTTPS, one certificate for every
``mta-sts.<domain>`` it serves, ``GET /.well-known/mta-sts.txt`` answered by the Host header
with that domain's policy as text/plain. Runs in a thread of the test process."""

from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path
from typing import Self

from postmesh.common.tls import ensure_dev_certificate
from tests.integration.infra._process import LocalServer
from tests.integration.infra.ports import free_port


class MtaStsServer(LocalServer):
    """``policies``: domain -> policy text. ``cert`` is the certificate the sender must trust
    (put it in POSTMESH_RELAY_CA_FILE); ``port`` goes in POSTMESH_MTA_STS_HTTPS_PORT."""

    def __init__(self, directory: Path, policies: dict[str, str]) -> None:
        self.policies = policies
        names = [f"mta-sts.{d}" for d in policies]
        self.cert, self.key = ensure_dev_certificate(directory, names[0], alt_names=names[1:])
        self.port = 0
        self.requests: list[str] = []
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                server.requests.append(f"{host}{self.path}")
                domain = host.removeprefix("mta-sts.")
                policy = server.policies.get(domain)
                if self.path != "/.well-known/mta-sts.txt" or policy is None:
                    self.send_error(404)
                    return
                body = policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the test asserts on ``requests``

        self.port = free_port()
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
