"""Real local HTTP(S) servers for the outbound-request tests: they listen on 127.0.0.x only and
record every request they get (method, path, headers, body, TLS SNI)."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Responder = Callable[[dict], tuple[int, dict[str, str], bytes]]


def _no_content(req: dict) -> tuple[int, dict[str, str], bytes]:
    return 204, {}, b""


class HookServer:
    """A threading HTTP server on ``host:port`` (port 0: any free one); ``tls`` is a server
    SSLContext (its ``sni_callback`` is set to record the name the client sent)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, respond: Responder = _no_content,
                 tls: ssl.SSLContext | None = None):
        assert host.startswith("127."), "tests only ever listen (and send) on loopback"
        self.requests: list[dict[str, Any]] = []
        self.sni: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                req = {"method": self.command, "path": self.path, "headers": self.headers,
                       "body": self.rfile.read(n) if n else b""}
                outer.requests.append(req)
                status, headers, body = respond(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            do_GET = do_POST = do_PUT = _handle  # noqa: N815 (http.server API)

            def log_message(self, *a: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                sock.settimeout(10)
                if tls is not None:  # a failed handshake is an OSError: the request is dropped
                    sock = tls.wrap_socket(sock, server_side=True)
                return sock, addr

        if tls is not None:
            tls.sni_callback = lambda sslobj, name, ctx: self.sni.append(name)
        self.srv = Server((host, port), Handler)
        self.host, self.port = self.srv.server_address[:2]
        self._thread = threading.Thread(target=self.srv.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def servers_on_same_port(hosts: list[str], **kw: Any) -> list[HookServer]:
    """One server per loopback address, all on one port (as one host name would have)."""
    for _ in range(50):
        first = HookServer(hosts[0], 0, **kw)
        out = [first]
        try:
            for h in hosts[1:]:
                out.append(HookServer(h, first.port, **kw))
            return out
        except OSError:
            for s in out:
                s.srv.server_close()
    raise RuntimeError("no common free port")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def self_signed(tmp: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for ``hostname``: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    stem = tmp / hostname.replace(".", "_")
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def resolver_for(table: dict[str, list[str]]) -> Callable[..., list[tuple]]:
    """A getaddrinfo stand-in answering only the names in ``table`` (never the real DNS)."""
    calls: list[str] = []

    def resolve(host: str, port: int, *a: Any, **k: Any) -> list[tuple]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port)) for ip in table[host]]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def rebinding_resolver(host: str, first: str, then: str) -> Callable[..., list[tuple]]:
    """Answers ``first`` for ``host`` the first time, ``then`` on every later lookup."""
    calls: list[str] = []

    def resolve(name: str, port: int, *a: Any, **k: Any) -> list[tuple]:
        if name != host:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        calls.append(name)
        ip = first if len(calls) == 1 else then
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve
