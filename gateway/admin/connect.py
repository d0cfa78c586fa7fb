"""`gateway check --connect`: sign in to the mailbox and the relay as the daemon does, and say what worked, one line each."""

from __future__ import annotations

from ..config import Config, Mailbox, Smtp
from ..delivery.send import sign_in
from ..errors import GatewayError
from ..intake.inbox import Inbox
from ..signin import Tokens, describe


def connect(settings: Config, tokens: Tokens | None = None) -> tuple[bool, list[str]]:
    """Whether both sign-ins worked, and a line for each (no secret, no token)."""
    tokens = tokens or Tokens()
    mailbox, relay = settings.mailbox, settings.smtp
    lines, worked = [], True
    try:
        with Inbox(mailbox, tokens):
            pass
        lines.append(f"mailbox: signed in to {mailbox.host}:{mailbox.port} as {mailbox.user} with {_how(mailbox)}; "
                     f"folder {mailbox.folder} opened")
    except GatewayError as error:
        worked = False
        lines.append(f"mailbox: FAILED: {error}")
    try:
        sign_in(relay, tokens)
        if relay.user or relay.auth == "oauth2":
            lines.append(f"relay: signed in to {relay.host}:{relay.port} as {relay.user} with {_how(relay)}")
        else:
            lines.append(f"relay: connected to {relay.host}:{relay.port} (no sign-in configured)")
    except GatewayError as error:
        worked = False
        lines.append(f"relay: FAILED: {error}")
    return worked, lines


def _how(section: Mailbox | Smtp) -> str:
    return describe(section) if section.auth == "oauth2" else "a password"
