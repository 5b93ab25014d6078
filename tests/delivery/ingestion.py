"""A local stand-in for the Azure Monitor Logs Ingestion API on 127.0.0.1, over TLS (azure-core refuses to
send a bearer token over plain HTTP): it checks the request contract the service documents — POST
/dataCollectionRules/{immutable id}/streams/{stream}?api-version=..., a bearer token, a gzip-encoded JSON
array — keeps the rows per stream, and answers scripted statuses (413, 429 with Retry-After) first."""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import re
import ssl
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RULE_ID = "dcr-00000000000000000000000000000001"
_PATH = re.compile(r"^/dataCollectionRules/(?P<rule>[^/]+)/streams/(?P<stream>[^/?]+)\?(?P<query>.*)$")
TOKEN = "static-test-token"  # noqa: S105 - what the stand-in accepts; no secret


class StaticToken:
    """A TokenCredential with a fixed token: DefaultAzureCredential has no managed identity here (a stand-in)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "ingestion.pem", folder / "ingestion.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass
class Ingestion:
    certificate: Path
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def check(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        """The service's answer to a request that breaks its contract, or (204, rows) for one that keeps it."""
        match = _PATH.match(path)
        if match is None or match["rule"] != RULE_ID:
            return 404, None
        if "api-version=" not in match["query"]:
            return 400, None
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, None
        if headers.get("content-encoding") != "gzip" or headers.get("content-type", "").split(";")[0] != \
                "application/json":
            return 415, None
        rows = orjson.loads(gzip.decompress(body))
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return 400, None
        return 204, {"stream": match["stream"], "rows": rows}


@contextmanager
def ingestion_service(folder: Path) -> Iterator[Ingestion]:
    cert_file, key_file = self_signed(folder)
    service = Ingestion(cert_file)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with lock:
                service.requests.append({"path": self.path, "headers": headers})
                scripted = service.answers.pop(0) if service.answers else None
            if scripted is not None:
                status, extra = scripted
            else:
                status, accepted = service.check(self.path, headers, body)
                extra = {}
                if accepted is not None:
                    with lock:
                        service.rows[accepted["stream"]].extend(accepted["rows"])
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    service.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
