"""Signing in to the mailbox and the relay with OAuth2 tokens: Microsoft 365, Google Workspace, any token service.

One generic client serves every provider (standard library HTTP, `cryptography` for signatures):
- client credentials (RFC 6749 4.4) with a client secret, or with a certificate: a JWT client assertion
  signed with its key (RFC 7523 2.2, Microsoft's "certificate credentials");
- a Google service account: a JWT bearer grant (RFC 7523 2.1) signed with the account's key, `sub` being
  the mailbox user (domain-wide delegation).
A token is kept in memory only (never on disk, never logged) until MARGIN seconds before it expires; the
IMAP and SMTP sides share it when their settings are the same. A refusal is one line naming its cause and
what to change in the app registration, and further requests wait (HOLD_FIRST doubling to HOLD_MAX), so a
broken registration never becomes a loop of sign-ins.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from .errors import Cause, SignInRefused, TokenServiceDown

MARGIN = 300.0  # seconds before its expiry at which a token is renewed: a sign-in never uses one about to lapse
HOLD_FIRST = 60.0  # after a refusal, the first wait before the token service is asked again
HOLD_MAX = 900.0  # the longest wait: a fixed app registration is noticed within 15 minutes
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

Section = config.Mailbox | config.Smtp
_Key = tuple[str, ...]  # what a token is cached under: the sign-in's settings, never its secret

if TYPE_CHECKING:  # cryptography is imported where a key is used: password sign-ins never load it
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class _Hold:
    until: float
    wait: float
    error: SignInRefused


class Tokens:
    """The tokens of one process, by sign-in settings; built once (app.build) and passed to the mailbox and relay."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tokens: dict[_Key, tuple[str, float]] = {}  # key -> (token, expires at)
        self._holds: dict[_Key, _Hold] = {}

    def token(self, section: Section, server: str) -> str:
        """A token for `section`, from memory while it has more than MARGIN seconds left, else from the
        token service. `server` ("mailbox" or "relay") keeps one server's refusal from holding the other off."""
        key = _key(section)
        now = self.clock()
        for hold_key in (key, key + (server,)):
            hold = self._holds.get(hold_key)
            if hold is not None and now < hold.until:
                raise SignInRefused(str(hold.error), hold.error.cause, hold.until - now)
        cached = self._tokens.get(key)
        if cached is not None and now < cached[1] - MARGIN:
            return cached[0]
        try:
            token, lifetime = _request(section, now)
        except SignInRefused as error:
            self._tokens.pop(key, None)
            raise self._hold(key, error) from None
        self._holds.pop(key, None)
        self._tokens[key] = (token, now + lifetime)
        return token

    def refused(self, section: Section, server: str, error: SignInRefused) -> SignInRefused:
        """A server refused a token the service issued: forget the token (a permission granted since shows
        only in a new one) and hold this server's sign-ins off; return the error with its wait."""
        key = _key(section)
        self._tokens.pop(key, None)
        return self._hold(key + (server,), error)

    def accepted(self, section: Section, server: str) -> None:
        """A server took the token: its next refusal starts the waits afresh."""
        self._holds.pop(_key(section) + (server,), None)

    def _hold(self, key: _Key, error: SignInRefused) -> SignInRefused:
        previous = self._holds.get(key)
        wait = HOLD_FIRST if previous is None else min(previous.wait * 2, HOLD_MAX)
        error.retry_in = wait
        self._holds[key] = _Hold(self.clock() + wait, wait, error)
        return error


def xoauth2(user: str, token: str) -> str:
    """The XOAUTH2 initial response (before base64), as Microsoft and Google specify it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def server_refused(section: Section, where: str) -> SignInRefused:
    """The line for a mail server that refused a token the token service issued: the app lacks a permission."""
    what = "IMAP.AccessAsApp" if isinstance(section, config.Mailbox) else "SMTP.SendAsApp"
    return SignInRefused(
        f"{where} refused the app's token ({Cause.PERMISSION.value}): in the app registration grant {what} "
        "(Office 365 Exchange Online) with admin consent and give the app's service principal access to this "
        "mailbox (Add-MailboxPermission); for Google, delegate the scope https://mail.google.com/ to the "
        "service account's client id", Cause.PERMISSION)


def describe(section: Section) -> str:
    """How the gateway signs in with these settings, for `gateway check --connect` (no secret, no token)."""
    if section.service_account_file is not None:
        how = "a service account key"
    elif section.client_certificate is not None:
        how = f"a certificate, client id {section.client_id}"
    else:
        how = f"a client secret, client id {section.client_id}"
    return f"OAuth2 ({how}, token from {urllib.parse.urlsplit(_token_url(section)).netloc})"


# -- the token service ---------------------------------------------------------------------------------

def _key(section: Section) -> _Key:
    subject = section.user if section.service_account_file is not None else ""
    return (section.token_url, section.client_id, section.client_secret_env, str(section.client_certificate),
            section.scope, str(section.service_account_file), subject)


def _request(section: Section, now: float) -> tuple[str, float]:
    """Ask the token service for a token; return it and its lifetime in seconds."""
    url = _token_url(section)
    form = _grant(section, url, now)
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    host = urllib.parse.urlsplit(url).netloc
    context = ssl.create_default_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=section.timeout, context=context) as response:
            answer = _json(response.read())
    except urllib.error.HTTPError as error:
        answer = _json(error.read())
        if error.code >= 500 or not isinstance(answer.get("error"), str):
            raise TokenServiceDown(f"the token service at {host} failed (HTTP {error.code})") from None
        raise _refusal(section, answer) from None
    except (urllib.error.URLError, OSError) as error:
        raise TokenServiceDown(f"cannot reach the token service at {host} ({type(getattr(error, 'reason', error)).__name__})") from None
    token, lifetime = answer.get("access_token"), answer.get("expires_in", 3600)
    try:
        lifetime = float(lifetime)  # Microsoft's v1 endpoint sends it as text
    except (TypeError, ValueError):
        lifetime = 3600.0
    if not isinstance(token, str) or not token:
        raise TokenServiceDown(f"the token service at {host} answered without a token")
    return token, lifetime


def _grant(section: Section, url: str, now: float) -> dict[str, str]:
    if section.service_account_file is not None:
        account = _service_account(section.service_account_file)
        key = _private_key(account.get("private_key", "").encode(), section, Cause.KEY)
        claims = {"iss": account.get("client_email", ""), "sub": section.user, "scope": section.scope, "aud": url,
                  "iat": int(now), "exp": int(now) + 3600}
        header = {"alg": "RS256", "typ": "JWT", "kid": account.get("private_key_id", "")}
        return {"grant_type": JWT_BEARER, "assertion": signed_jwt(header, claims, key)}
    form = {"grant_type": "client_credentials", "client_id": section.client_id, "scope": section.scope}
    if section.client_certificate is not None:
        from cryptography.hazmat.primitives import hashes

        certificate, key = _certificate(section, now)
        thumbprint = base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA1())).rstrip(b"=").decode()
        claims = {"aud": url, "iss": section.client_id, "sub": section.client_id, "jti": str(uuid.uuid4()),
                  "nbf": int(now), "iat": int(now), "exp": int(now) + 600}
        form["client_assertion_type"] = CLIENT_ASSERTION
        form["client_assertion"] = signed_jwt({"alg": "RS256", "typ": "JWT", "x5t": thumbprint}, claims, key)
        return form
    secret = config.secret(section.client_secret_env)
    if not secret:
        raise SignInRefused(f"the client secret is not set ({Cause.SETUP.value}): put it in the environment "
                            f"variable {section.client_secret_env}", Cause.SETUP)
    form["client_secret"] = secret
    return form


def _token_url(section: Section) -> str:
    if section.token_url or section.service_account_file is None:
        return section.token_url
    try:
        return str(_service_account(section.service_account_file).get("token_uri", ""))
    except SignInRefused:
        return ""


def _service_account(path: Path) -> dict[str, Any]:
    try:
        account = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SignInRefused(f"cannot read the service account key file {path} ({Cause.KEY.value}): download the "
                            "key again (JSON) from the service account", Cause.KEY) from None
    return account if isinstance(account, dict) else {}


def _certificate(section: Section, now: float) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    from cryptography import x509

    path = section.client_certificate
    assert path is not None
    try:
        data = path.read_bytes()
        certificate = x509.load_pem_x509_certificate(data)
    except (OSError, ValueError):
        raise SignInRefused(f"cannot read a certificate in {path} ({Cause.CERTIFICATE.value}): it must hold the "
                            "certificate and its private key (PEM)", Cause.CERTIFICATE) from None
    ends = certificate.not_valid_after_utc
    if ends.timestamp() <= now:
        raise SignInRefused(f"the certificate in {path} expired on {ends:%Y-%m-%d} ({Cause.CERTIFICATE.value}): "
                            "make a new one and upload it to the app registration (Certificates & secrets)",
                            Cause.CERTIFICATE)
    return certificate, _private_key(data, section, Cause.CERTIFICATE)


def _private_key(pem: bytes, section: Section, cause: Cause) -> rsa.RSAPrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    where = section.client_certificate or section.service_account_file
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignInRefused(f"no unencrypted RSA private key in {where} ({cause.value})", cause)
    return key


def signed_jwt(header: dict[str, Any], claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    """A compact JWS signed RS256 (RFC 7515, 7518 3.3)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


# Microsoft's AADSTS numbers that say more than the OAuth2 code (learn.microsoft.com, "AADSTS error codes").
_AADSTS = {
    7000215: Cause.SECRET,  # invalid client secret
    7000222: Cause.SECRET,  # the client secret expired
    700027: Cause.CERTIFICATE,  # the client assertion's signature or certificate is not the registered one
    700016: Cause.UNKNOWN_APP,  # no such application in the tenant
    90002: Cause.UNKNOWN_APP,  # no such tenant
    7000112: Cause.PERMISSION,  # the application is disabled
    1002012: Cause.PERMISSION,  # the scope is not one the app may request
}
_WHAT_TO_DO = {
    Cause.SECRET: "create a new client secret in the app registration (Certificates & secrets) and put it in the "
                  "environment variable {secret_env}",
    Cause.CERTIFICATE: "upload the certificate in {certificate} to the app registration (Certificates & secrets), "
                       "or make a new one if it expired",
    Cause.KEY: "the key was deleted or disabled: create a new key for the service account and save it as {account}",
    Cause.UNKNOWN_APP: "copy the Application (client) ID and the tenant from the app registration's overview "
                       "into client_id and token_url",
    Cause.PERMISSION: "grant the app its API permissions (IMAP.AccessAsApp, SMTP.SendAsApp) with admin consent, "
                      "or for Google delegate the scope {scope} to the service account",
    Cause.SETUP: "check token_url, client_id and scope",
}


def _refusal(section: Section, answer: dict[str, Any]) -> SignInRefused:
    """The one line for a token service's refusal (RFC 6749 5.2 codes, with Microsoft's AADSTS numbers)."""
    code = str(answer["error"])[:40]
    numbers = [n for n in answer.get("error_codes", []) if isinstance(n, int)]
    cause = next((_AADSTS[n] for n in numbers if n in _AADSTS), None)
    if cause is None:
        if code == "invalid_client":
            cause = Cause.CERTIFICATE if section.client_certificate is not None else Cause.SECRET
        elif code == "invalid_grant" and section.service_account_file is not None:
            cause = Cause.KEY
        elif code in ("unauthorized_client", "access_denied", "invalid_scope"):
            cause = Cause.PERMISSION
        else:
            cause = Cause.SETUP
    said = code + (f", AADSTS{numbers[0]}" if numbers else "")
    todo = _WHAT_TO_DO[cause].format(secret_env=section.client_secret_env, certificate=section.client_certificate,
                               account=section.service_account_file, scope=section.scope)
    return SignInRefused(f"the token service refused the app ({cause.value}; it said {said}): {todo}", cause)

