"""An SMTP relay for tests: aiosmtpd in a thread on 127.0.0.1 that records or refuses every message.

    with SmtpCapture() as smtp:                       # started on enter
        smtp.host, smtp.port
        smtp.messages -> list[CapturedMessage]        # mail_from, rcpt_tos, data
        smtp.wait_for(count, timeout=10) -> list[CapturedMessage]
        smtp.fail_with = "451 4.3.0 Try again later"  # reply instead of 250
        smtp.fail_on = "data"                         # or "rcpt"
        smtp.fail_with = None                         # back to accepting
        smtp.clear()
    SmtpCapture(xoauth2=service.verify)               # AUTH XOAUTH2 required (no TLS needed on
                                                      # the loopback); smtp.auth_attempts counts tries
    # data: bytes as received (CRLF, dot-stuffing undone); a refused message
    # is not captured; SmtpCapture().start() / .stop() for manual use.
    # CapturedMessage.tls: whether that session was encrypted.

    SmtpCapture(tls=(cert, key))                 # offers STARTTLS, not required
    SmtpCapture(tls=(cert, key), implicit=True)  # the whole connection is TLS
    smtp.client_tls_context()                    # = create_default_context(cafile=cert)
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import ssl
import threading
import time
import warnings
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from gateway.demo.embedded import free_port

from .processes import LOCALHOST
from .tls import server_tls_context


@dataclasses.dataclass(frozen=True)
class CapturedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    # Whether the session was encrypted when the message came (STARTTLS or
    # implicit TLS).
    tls: bool = False
    # time.monotonic() when the relay accepted it (for latency measurements).
    accepted_at: float = 0.0


class _CaptureHandler:
    """aiosmtpd handler; runs in the controller's event-loop thread."""

    def __init__(self, owner: SmtpCapture) -> None:
        self.owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.owner._failure("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self.owner._failure("data")
        if reply:
            return reply
        self.owner._capture(
            CapturedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                # With decode_data=False (the default) this is the bytes as
                # received, CRLF line ends, dot-stuffing already undone.
                data=bytes(envelope.original_content),
                tls=_encrypted(server, session),
                accepted_at=time.monotonic(),
            )
        )
        return "250 OK"


class _XOAuth2Handler(_CaptureHandler):
    """A relay that takes mail only after AUTH XOAUTH2 with a token its `xoauth2(user, token)` accepts."""

    async def auth_XOAUTH2(self, server, args):
        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in blob.decode(errors="replace").split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer[len("Bearer "):] if bearer.startswith("Bearer ") else ""
        self.owner.auth_attempts += 1
        if self.owner.xoauth2(user, token):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False, message="535 5.7.3 Authentication unsuccessful")


class _LongAuthSMTP(SMTP):
    """RFC 4954 4 lets an AUTH line run to 12288 octets (a JWT is longer than the 512 of other commands)."""

    command_size_limit = 16384
    line_length_limit = 16384

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)


class _XOAuth2Controller(Controller):
    def factory(self):
        with warnings.catch_warnings():  # AUTH without TLS: on the loopback, on purpose
            warnings.simplefilter("ignore")
            return _LongAuthSMTP(self.handler, **self.SMTP_kwargs)


def _encrypted(server, session) -> bool:
    # aiosmtpd fills session.ssl after STARTTLS only; with implicit TLS the
    # transport asyncio built for the connection is the TLS one from the start.
    if session.ssl is not None:
        return True
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


EVERY_CAPTURED: list[bytes] = []  # every message any SmtpCapture accepted in this test session


class SmtpCapture:
    """An SMTP sink on 127.0.0.1 that records or refuses every message."""

    def __init__(
        self,
        host: str = LOCALHOST,
        tls: tuple[Path, Path] | None = None,
        implicit: bool = False,
        xoauth2=None,
    ) -> None:
        if implicit and tls is None:
            raise ValueError("implicit=True needs tls=(cert_path, key_path)")
        self.host = host
        self.port = 0
        self.tls = None if tls is None else (Path(tls[0]).absolute(), Path(tls[1]).absolute())
        self.implicit = implicit
        # xoauth2(user, token) -> bool: AUTH XOAUTH2 is then offered (without TLS too: loopback) and
        # required before MAIL; auth_attempts counts the tries.
        self.xoauth2 = xoauth2
        self.auth_attempts = 0
        # When set, this reply replaces "250 OK" at fail_on ("data" or "rcpt")
        # and nothing is captured.  Read in the server thread at each command,
        # so it can be flipped while the server runs.
        self.fail_with: str | None = None
        self.fail_on = "data"
        self.messages: list[CapturedMessage] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def __enter__(self) -> SmtpCapture:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("SmtpCapture is already running")
        for attempt in range(5):
            port = free_port()
            auth = {} if self.xoauth2 is None else {"auth_require_tls": False, "auth_required": True}
            handler = (_CaptureHandler if self.xoauth2 is None else _XOAuth2Handler)(self)
            kind = Controller if self.xoauth2 is None else _XOAuth2Controller
            controller = kind(handler, hostname=self.host, port=port, **self._tls_kwargs(), **auth)
            try:
                controller.start()
            except OSError:
                # Someone took the port between free_port() and bind().
                with contextlib.suppress(Exception):
                    controller.stop()
                if attempt == 4:
                    raise
                continue
            self._controller, self.port = controller, port
            return

    def _tls_kwargs(self) -> dict:
        if self.tls is None:
            return {}
        context = server_tls_context(self.tls)
        if self.implicit:
            # The listening socket itself is TLS.  Controller's ready check
            # (_trigger_server) then connects with TLS too, unverified.
            return {"ssl_context": context}
        # STARTTLS offered in EHLO, not required: a plain client still works.
        return {"tls_context": context, "require_starttls": False}

    def client_tls_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        if self.tls is None:
            raise RuntimeError("this SmtpCapture was started without tls")
        return ssl.create_default_context(cafile=str(self.tls[0]))

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def fail_on(self) -> str:
        return self._fail_on

    @fail_on.setter
    def fail_on(self, stage: str) -> None:
        # A typo would otherwise silently never fail, passing the wrong test.
        if stage not in ("data", "rcpt"):
            raise ValueError(f"fail_on must be 'data' or 'rcpt', not {stage!r}")
        self._fail_on = stage

    def _failure(self, stage: str) -> str | None:
        reply = self.fail_with
        if reply and self.fail_on == stage:
            return reply
        return None

    def _capture(self, message: CapturedMessage) -> None:
        EVERY_CAPTURED.append(message.data)  # for the leak scan after the suite (tests/leaks.py)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(self, count: int, timeout: float = 10) -> list[CapturedMessage]:
        """Block until at least count messages arrived; return a copy of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout}s, got {len(self.messages)}"
                )
            return list(self.messages)
