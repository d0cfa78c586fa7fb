"""A real OAuth2 token service for the tests: http.server in a thread on 127.0.0.1.

It answers as Microsoft's identity platform (v2.0 token endpoint) and Google's do:

    with TokenService() as service:                  # started on enter
        service.url                                  # http://127.0.0.1:<port>/token
        service.add_client("app", secret="s3cret", mailbox="ldor@example.org")
        service.add_client("app2", certificate=cert_pem_bytes, mailbox=...)   # certificate credentials
        service.add_service_account(account_json_dict_with_public_key..., delegated=["ldor@example.org"])
        service.revoke("app")                        # its secret or certificate no longer accepted
        service.requests                             # every token request: (client, grant_type, outcome)
        service.public_pem                           # the key Dovecot and the relay validate tokens with
        service.verify(user, token) -> bool          # what the SMTP relay's XOAUTH2 checks
        service.expires_in = 3600                    # lifetime of the tokens it issues

Tokens are JWTs signed RS256 with the service's key (kid "test"); the claim `email` names the one mailbox
the client was granted (Add-MailboxPermission), so Dovecot's oauth2 passdb (username_attribute = email)
refuses a token for any other mailbox, as Exchange refuses an app without access. Refusals carry the
OAuth2 error codes (RFC 6749 5.2) and, for Microsoft's cases, its AADSTS numbers.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.signin import CLIENT_ASSERTION, JWT_BEARER, signed_jwt

SCOPES = ("https://outlook.office365.com/.default", "https://mail.google.com/")


@dataclass
class Client:
    secret: str | None = None
    certificate: x509.Certificate | None = None
    mailbox: str | None = None  # the one mailbox the app may use
    revoked: bool = False


@dataclass
class ServiceAccount:
    public_key: rsa.RSAPublicKey
    delegated: list[str] = field(default_factory=list)  # users it may act as (domain-wide delegation)
    revoked: bool = False


def make_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token: str, key: rsa.RSAPublicKey) -> tuple[dict, dict] | None:
    """(header, claims) of an RS256 JWT whose signature `key` verifies; None otherwise."""
    try:
        head, body, signature = token.split(".")
        key.verify(_b64decode(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return json.loads(_b64decode(head)), json.loads(_b64decode(body))
    except (ValueError, InvalidSignature):
        return None


class TokenService:
    def __init__(self, expires_in: int = 3600) -> None:
        self.key = make_rsa_key()
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.expires_in = expires_in
        self.clients: dict[str, Client] = {}
        self.accounts: dict[str, ServiceAccount] = {}
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- set-up ---------------------------------------------------------------------------------------
    def add_client(self, client_id: str, secret: str | None = None, certificate: bytes | None = None,
                   mailbox: str | None = None) -> None:
        cert = x509.load_pem_x509_certificate(certificate) if certificate else None
        self.clients[client_id] = Client(secret, cert, mailbox)

    def add_service_account(self, email: str, public_key: rsa.RSAPublicKey, delegated: list[str]) -> None:
        self.accounts[email] = ServiceAccount(public_key, list(delegated))

    def revoke(self, client_id: str) -> None:
        (self.clients.get(client_id) or self.accounts[client_id]).revoked = True

    def count(self, outcome: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, _, said in self.requests if outcome is None or said == outcome)

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> TokenService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                status, answer = service._answer(form)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    # -- the token endpoint ---------------------------------------------------------------------------
    def _answer(self, form: dict) -> tuple[int, dict]:
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            who, status, answer = self._client_credentials(form)
        elif grant == JWT_BEARER:
            who, status, answer = self._jwt_bearer(form)
        else:
            who, status, answer = "?", 400, {"error": "unsupported_grant_type"}
        with self._lock:
            self.requests.append((who, grant, answer.get("error", "issued")))
        return status, answer

    def _client_credentials(self, form: dict) -> tuple[str, int, dict]:
        client_id = form.get("client_id", "")
        client = self.clients.get(client_id)
        if client is None:
            return client_id, 400, {"error": "unauthorized_client", "error_codes": [700016]}
        if client.secret is not None:
            if client.revoked or form.get("client_secret") != client.secret:
                return client_id, 401, {"error": "invalid_client", "error_codes": [7000215]}
        elif client.certificate is not None:
            if client.revoked or not self._assertion_ok(form, client_id, client.certificate):
                return client_id, 401, {"error": "invalid_client", "error_codes": [700027]}
        if form.get("scope") not in SCOPES:
            return client_id, 400, {"error": "invalid_scope", "error_codes": [70011]}
        return client_id, 200, self._issue(client_id, client.mailbox)

    def _assertion_ok(self, form: dict, client_id: str, certificate: x509.Certificate) -> bool:
        if form.get("client_assertion_type") != CLIENT_ASSERTION:
            return False
        decoded = decode_jwt(form.get("client_assertion", ""), certificate.public_key())
        if decoded is None:
            return False
        header, claims = decoded
        thumbprint = base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA1())).rstrip(b"=").decode()
        return (header.get("x5t") == thumbprint and claims.get("aud") == self.url and claims.get("iss") == client_id
                and claims.get("sub") == client_id and claims.get("exp", 0) > time.time())

    def _jwt_bearer(self, form: dict) -> tuple[str, int, dict]:
        try:
            claims = json.loads(_b64decode(form.get("assertion", "").split(".")[1]))
        except (ValueError, IndexError):
            return "?", 400, {"error": "invalid_grant"}
        email = claims.get("iss", "")
        account = self.accounts.get(email)
        if account is None or account.revoked or decode_jwt(form["assertion"], account.public_key) is None:
            return email, 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims.get("aud") != self.url or claims.get("exp", 0) <= time.time():
            return email, 400, {"error": "invalid_grant"}
        if claims.get("sub") not in account.delegated or claims.get("scope") not in SCOPES:
            return email, 401, {"error": "unauthorized_client"}
        return email, 200, self._issue(email, claims["sub"])

    def _issue(self, client_id: str, mailbox: str | None) -> dict:
        now = int(time.time())
        claims = {"iss": "https://login.test/", "sub": client_id, "iat": now, "nbf": now,
                  "exp": now + self.expires_in}
        if mailbox:
            claims["email"] = mailbox
        token = signed_jwt({"alg": "RS256", "typ": "JWT", "kid": "test"}, claims, self.key)
        return {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": token}

    def verify(self, user: str, token: str) -> bool:
        """What a relay checks of an XOAUTH2 token: this service's signature, not expired, for this mailbox."""
        decoded = decode_jwt(token, self.key.public_key())
        return decoded is not None and decoded[1].get("exp", 0) > time.time() and decoded[1].get("email") == user


def certificate_pem(folder, name: str = "app", days: int = 30) -> tuple[bytes, bytes]:
    """(the PEM file the gateway reads: certificate and key, the certificate alone) for certificate credentials.
    days < 0 makes one that expired."""
    import datetime

    key = make_rsa_key()
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    start = min(now - datetime.timedelta(minutes=5), end - datetime.timedelta(days=30))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem + key_pem, cert_pem
